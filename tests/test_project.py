"""Project files and what every script promises: CI runs exactly the README's test command, algorithm files stand
alone, an interrupted run keeps its checkpoint, the same seed gives the same run, a run below the warm-up still
evaluates and summarises, and a checkpoint file is never code.

Starting Python with torch costs seconds of CPU, so where a claim allows it several CLI invocations share one
process (run_in_one_process): each runs the script's own `__main__` block with its arguments, its stdout, stderr and
exit status captured as a separate process would show them."""

import ast
import difflib
import glob
import importlib.util
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, eval_lines, run_in_one_process

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from report import read_curve  # noqa: E402


def test_ci_runs_exactly_the_readme_test_command():
    readme = open(os.path.join(ROOT, "README.md")).read()
    commands = re.findall(r"```bash\n(python3 -m venv .*)\n```", readme)
    assert len(commands) == 2, "the README's quick start has exactly two commands"
    ci = open(os.path.join(ROOT, ".ci", "run")).read().strip().splitlines()[-1]
    assert ci == commands[1]


def test_algorithm_files_import_only_libraries_and_envs():
    allowed = {"envs", "gymnasium", "numpy", "torch", "tyro", "imageio"}
    for name in sorted(os.listdir(ROOT)):
        if not name.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(ROOT, name)).read())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                for module in modules:
                    top = module.split(".")[0]
                    assert top in allowed or top in __import__("sys").stdlib_module_names, f"{name} imports {module}"


LONG_RUNS = {  # arguments that print an evaluation line soon and then train for a long time
    "her_ddpg.py": ["--env", "Point2D", "--eval-interval", "200", "--hidden-dims", "32"],
    "reengage.py": ["--env", "Point2D", "--eval-interval", "200", "--hidden-dims", "32"],
    "reengage_seek.py": ["--env", "Point2D", "--eval-interval", "200", "--random-episodes", "1", "--hidden-dims", "32"],
    "reengage_sac.py": ["--env", "Point2D", "--eval-interval", "200", "--hidden-dims", "32"],
    "hem.py": ["--env", "Point2D", "--eval-interval", "100", "--hidden-dims", "32"],
    "hem_hybrid.py": ["--env", "Point2D", "--eval-interval", "100", "--hidden-dims", "32"],
    "mher.py": ["--env", "Point2D", "--eval-interval", "100", "--random-episodes", "1", "--dyn-warmup", "1",
                "--hidden-dims", "32"],
    "hdm.py": ["--env", "Point2D", "--eval-interval", "100", "--random-episodes", "1", "--hidden-dims", "32", "32"],
    "htrpo.py": ["--env", "BitFlip:n=4", "--steps-per-iter", "40", "--eval-interval", "40", "--hidden-dims", "32"],
    "multi_reengage.py": ["--env", "DriveSeek", "--random-episodes", "1", "--eval-interval", "80", "--encoder-dims",
                          "16", "16", "--hidden-dims", "16", "--n-test-rollouts", "2"],
    "reengage_dqn.py": ["--env", "BitFlip:n=4", "--num-envs", "2", "--eval-interval", "40", "--n-batches", "2",
                        "--n-test-rollouts", "2", "--hidden-dims", "16"],
}


@pytest.mark.parametrize("script", ["her_ddpg.py", "reengage.py", "reengage_sac.py"])
def test_env_threads_above_one_step_the_envs_on_threads(script):
    """--env-threads N > 1 gives envs.ThreadedVectorEnv with N workers, 1 the plain SyncVectorEnv (the runs' equality
    is tested in test_her_ddpg.py and test_envs.py; this guards the flag's wiring)."""
    import gymnasium as gym
    import envs
    spec = importlib.util.spec_from_file_location(script[:-3], os.path.join(ROOT, script))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for threads, kind in ((2, envs.ThreadedVectorEnv), (1, gym.vector.SyncVectorEnv)):
        vec_env = module.make_vec_env(module.Args(env="FetchReach", env_threads=threads), 3)
        try:
            assert type(vec_env) is kind
            if threads > 1:
                assert vec_env.pool._max_workers == threads
            vec_env.reset(seed=0)
            vec_env.step(vec_env.action_space.sample())
        finally:
            vec_env.close()


@pytest.mark.parametrize("script", sorted(LONG_RUNS))
def test_ctrl_c_saves_the_checkpoint(tmp_path, script):
    args = [*LONG_RUNS[script], "--save-model", "--total-timesteps", "10000000"]
    # -X faulthandler: if the run hangs, SIGABRT makes it print every thread's stack, and the failure shows where.
    # preexec_fn: a shell without job control starts background jobs with SIGINT ignored, and the run would inherit
    # that; give it the terminal's default, as a user's foreground run has
    proc = subprocess.Popen([sys.executable, "-X", "faulthandler", os.path.join(ROOT, script), *args], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": ROOT}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout.readline().startswith(script[:-3] + " | ")  # the header line
        assert proc.stdout.readline().startswith("step ")  # an evaluation: training is under way
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            pytest.fail(f"no exit within 180 s of Ctrl-C; the run's stacks:\n{proc.communicate()[1][-4000:]}")
    finally:  # never leave a 10M-step run behind: it would slow every later test
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    assert "interrupted at step" in out and "Traceback" not in err
    assert glob.glob(str(tmp_path / "runs" / "*" / script.replace(".py", ".pt")))


SHORT_RUNS = {  # a few evaluations' worth of training, and the checkpoint entry holding the trained network
    "her_ddpg.py": (["--env", "ContinuousSeek:d=2", "--total-timesteps", "600", "--eval-interval", "100", "--n-batches",
                     "5", "--batch-size", "64", "--n-test-rollouts", "20", "--hidden-dims", "32"], "actor"),
    "reengage.py": (["--env", "ContinuousSeek:d=2", "--total-timesteps", "600", "--eval-interval", "100", "--n-batches",
                     "5", "--batch-size", "64", "--n-test-rollouts", "20", "--hidden-dims", "32"], "actor"),
    "reengage_seek.py": (["--env", "ContinuousSeek:d=2", "--total-timesteps", "400", "--eval-interval", "100",
                          "--random-episodes", "10", "--batch-size", "64", "--n-test-rollouts", "10", "--hidden-dims",
                          "32"], "actor"),
    "reengage_sac.py": (["--env", "ContinuousSeek:d=2", "--total-timesteps", "400", "--eval-interval", "100",
                         "--random-episodes", "10", "--batch-size", "64", "--n-test-rollouts", "10", "--hidden-dims",
                         "32"], "actor"),
    "hem.py": (["--env", "Navigation:k=2", "--total-timesteps", "300", "--n-episodes", "2", "--n-batches", "3",
                "--eval-interval", "100", "--n-test-rollouts", "5", "--hidden-dims", "32"], "policy"),
    "hem_hybrid.py": (["--env", "Point2D", "--total-timesteps", "400", "--eval-interval", "100", "--n-batches", "3",
                       "--batch-size", "64", "--n-test-rollouts", "5", "--hidden-dims", "32"], "policy"),
    "mher.py": (["--env", "Point2D", "--total-timesteps", "600", "--random-episodes", "3", "--eval-interval", "100",
                 "--n-batches", "2", "--dyn-warmup", "2", "--n-test-rollouts", "2", "--hidden-dims", "32"], "actor"),
    "hdm.py": (["--env", "FourRooms", "--total-timesteps", "300", "--random-episodes", "2", "--eval-interval", "100",
                "--n-test-rollouts", "2", "--hidden-dims", "32", "32"], "q_net"),
    "htrpo.py": (["--env", "BitFlip:n=4,start=zeros", "--total-timesteps", "240", "--steps-per-iter", "40",
                  "--eval-interval", "80", "--n-test-rollouts", "10", "--hidden-dims", "16"], "policy"),
    "multi_reengage.py": (["--env", "NoisySeek", "--total-timesteps", "240", "--random-episodes", "2",
                           "--eval-interval", "80", "--batch-size", "16", "--encoder-dims", "16", "16", "--hidden-dims",
                           "16", "--n-test-rollouts", "3"], "actor"),
    "reengage_dqn.py": (["--env", "BitFlip:n=4", "--total-timesteps", "240", "--num-envs", "4", "--eval-interval",
                         "80", "--n-batches", "5", "--batch-size", "32", "--n-test-rollouts", "4", "--hidden-dims",
                         "16"], "q_net"),
}

def test_same_seed_same_evaluation_curve_and_weights(tmp_path):
    """Per script, same seed: identical evaluation lines and bit-identical weights between two processes, the second
    run coming after other runs in its process; another seed differs. Every evaluation logs the gradient steps."""
    runs = {name: [] for name in "abc"}
    for script, (args, _) in SHORT_RUNS.items():
        for name, seed in zip("abc", "778"):
            (tmp_path / name / script).mkdir(parents=True)
            runs[name].append((tmp_path / name / script, [script, *args, "--save-model", "--seed", seed]))
    first = run_in_one_process(runs["a"])  # every script's seed-7 run, then in another process seed 8 before seed 7
    second = run_in_one_process([run for pair in zip(runs["c"], runs["b"]) for run in pair])
    for i, (script, (_, key)) in enumerate(SHORT_RUNS.items()):
        outs = [first[i], second[2 * i + 1], second[2 * i]]  # a, b, c
        assert all(out.returncode == 0 for out in outs), (script, [out.stderr for out in outs])
        nets = [torch.load(glob.glob(str(tmp_path / name / script / "runs" / "*" / script.replace(".py", ".pt")))[0],
                           weights_only=True)[key] for name in "abc"]
        lines = [eval_lines(out.stdout) for out in outs]
        assert lines[0] == lines[1] and len(lines[0]) >= 2, script
        grads = read_curve(str(tmp_path / "a" / script), "charts/gradient_steps")[1]  # what the report reads
        assert len(grads) == len(lines[0]) and grads[-1] > 0 and (np.diff(grads) >= 0).all(), script
        assert all(torch.equal(nets[0][k], nets[1][k]) for k in nets[0]), script
        assert not all(torch.equal(nets[0][k], nets[2][k]) for k in nets[0]), script


SCRIPTS = sorted(SHORT_RUNS)
BELOW_WARMUP = {  # budgets shorter than the warm-up (or than one round of episodes)
    "her_ddpg.py": ["--env", "FetchReach", "--total-timesteps", "1", "--n-batches", "1", "--n-test-rollouts", "2",
                    "--hidden-dims", "16"],
    "hdm.py": ["--env", "FourRooms", "--total-timesteps", "100", "--random-episodes", "5", "--n-test-rollouts", "2",
               "--hidden-dims", "16"],
    "hem.py": ["--env", "FetchReach", "--total-timesteps", "1", "--n-test-rollouts", "2", "--hidden-dims", "16"],
    "hem_hybrid.py": ["--env", "FetchReach", "--total-timesteps", "1", "--n-test-rollouts", "2", "--hidden-dims",
                      "16"],
    "htrpo.py": ["--env", "BitFlip:n=4,start=zeros", "--total-timesteps", "1", "--steps-per-iter", "40",
                 "--n-test-rollouts", "4", "--hidden-dims", "16"],
    "reengage.py": ["--env", "FetchReach", "--total-timesteps", "1", "--n-batches", "1", "--n-test-rollouts", "2",
                    "--hidden-dims", "16"],
    "reengage_seek.py": ["--env", "ContinuousSeek:d=2", "--total-timesteps", "50", "--n-test-rollouts", "2",
                         "--hidden-dims", "16"],
    "reengage_sac.py": ["--env", "ContinuousSeek:d=2", "--total-timesteps", "50", "--n-test-rollouts", "2",
                        "--hidden-dims", "16"],
    "mher.py": ["--env", "Point2D", "--total-timesteps", "150", "--n-test-rollouts", "2", "--hidden-dims", "16"],
    "multi_reengage.py": ["--total-timesteps", "50", "--n-test-rollouts", "2", "--encoder-dims", "16", "16",
                          "--hidden-dims", "16"],
    "reengage_dqn.py": ["--env", "BitFlip:n=4", "--total-timesteps", "1", "--num-envs", "2", "--n-batches", "1",
                        "--n-test-rollouts", "2", "--hidden-dims", "16"],
}


@pytest.mark.parametrize("algo", ["her_ddpg", "reengage"])
def test_torchrun_two_workers_train_only_rank_0_reports_and_gloo_is_gone_before_exit(tmp_path, algo):
    """Rank 0 alone prints, evaluates and saves. After main, each worker is down to its main thread: gloo threads left
    for the interpreter's exit aborted up to 3 runs in 23 ("terminate called without an active exception")."""
    (tmp_path / "count_threads.py").write_text("import os, runpy, sys\nsys.argv = sys.argv[1:]\n"
                                               "runpy.run_path(sys.argv[0], run_name='__main__')\n"
                                               "with open(f'threads_{os.environ[\"RANK\"]}', 'w') as f:\n"
                                               "    f.write(str(len(os.listdir('/proc/self/task'))))\n")
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29517", str(tmp_path / "count_threads.py"), os.path.join(ROOT, f"{algo}.py"), "--env",
                          "Point2D", "--total-timesteps", "800", "--eval-interval", "400", "--n-batches", "3",
                          "--hidden-dims", "16", "--batch-size", "16", "--n-test-rollouts", "2", "--save-model"],
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count(f"{algo} | Point2D-v0 | 800 env steps (2 workers)") == 1
    assert len(eval_lines(out.stdout)) == 2 and out.stdout.count(f"{algo} done") == 1
    assert len(glob.glob(str(tmp_path / "runs" / "*" / f"{algo}.pt"))) == 1
    assert [(tmp_path / f"threads_{rank}").read_text() for rank in (0, 1)] == ["1", "1"]


def test_a_budget_below_the_warm_up_still_ends_with_an_evaluation_and_the_summary(tmp_path):
    outs = run_in_one_process([(tmp_path, [script, *BELOW_WARMUP[script]]) for script in SCRIPTS])
    for script, out in zip(SCRIPTS, outs):
        assert out.returncode == 0, (script, out.stderr)
        lines = out.stdout.strip().splitlines()
        algo = script[:-3]
        assert lines[0].startswith(f"{algo} | ") and "run runs/" in lines[0] and "tensorboard --logdir runs" in lines[0]
        assert eval_lines(out.stdout), out.stdout  # at least one evaluation, with a success figure
        assert re.match(rf"{algo} done \| success \d\.\d\d \| [\d,]+ env steps \| [\d,]+ gradient steps \| \d+ s",
                        lines[-1]), lines[-1]


class RunsCode:
    """Unpickling this runs a shell command: what a checkpoint from elsewhere could hide."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_that_would_run_code_or_is_not_one_is_refused_in_one_line_and_runs_nothing(tmp_path):
    """Per script: a torch file whose unpickling would run a command, and a text file."""
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    runs = []
    for script in SCRIPTS:
        torch.save({"algo": script[:-3], "actor": RunsCode(tmp_path / f"pwned_{script}")}, tmp_path / f"{script}.pt")
        runs += [(tmp_path, [script, "--eval-checkpoint", str(tmp_path / name)]) for name in (f"{script}.pt",
                                                                                              "notes.txt")]
    wrong = [(argv[0], argv[-1], out.returncode, out.stderr) for (_, argv), out in zip(runs, run_in_one_process(runs))
             if out.returncode == 0 or "not a" not in out.stderr or "checkpoint" not in out.stderr
             or len(out.stderr.strip().splitlines()) != 1 or "Traceback" in out.stderr]
    assert not wrong  # (script, file, exit status, stderr) of each run that did not end in one line
    assert not glob.glob(str(tmp_path / "pwned_*"))


VIDEO_RUNS = {script: BELOW_WARMUP[script] for script in ("her_ddpg.py", "reengage.py", "hem.py", "hem_hybrid.py")}
VIDEO_RUNS["reengage_sac.py"] = ["--env", "FetchReach", "--total-timesteps", "1", "--n-test-rollouts", "2",
                                 "--hidden-dims", "16"]


def test_capture_video_saves_a_gif_of_the_checkpoints_policy_next_to_it(tmp_path):
    """Each script with --capture-video: evaluating a FetchReach checkpoint also writes <checkpoint>.gif."""
    runs = [(tmp_path / script, [script, *args, "--save-model"]) for script, args in VIDEO_RUNS.items()]
    for cwd, _ in runs:
        cwd.mkdir()
    assert all(out.returncode == 0 for out in run_in_one_process(runs))
    ckpts = [glob.glob(str(cwd / "runs" / "*" / argv[0].replace(".py", ".pt")))[0] for cwd, argv in runs]
    outs = run_in_one_process([(tmp_path, [script, "--eval-checkpoint", ckpt, "--n-test-rollouts", "1",
                                           "--capture-video"]) for script, ckpt in zip(VIDEO_RUNS, ckpts)])
    if "cannot render here" in outs[0].stdout:
        pytest.skip(f"MuJoCo cannot render on this machine: {outs[0].stdout.strip().splitlines()[-1]}")
    for script, ckpt, out in zip(VIDEO_RUNS, ckpts, outs):
        assert out.returncode == 0 and f"video: {ckpt[:-3]}.gif" in out.stdout, (script, out.stdout, out.stderr)
        assert os.path.getsize(ckpt[:-3] + ".gif") > 0


ALGORITHM_FILES = sorted(n for n in os.listdir(ROOT) if n.endswith(".py"))


def test_algorithm_files_stay_short_and_reengage_is_her_ddpg_plus_its_term():
    """At most 550 lines a file, docstring included; `diff her_ddpg.py reengage.py` at most 150 changed lines."""
    lines = {name: open(os.path.join(ROOT, name)).read().splitlines() for name in ALGORITHM_FILES}
    assert {name: len(text) for name, text in lines.items() if len(text) > 550} == {}
    changed = [line for line in difflib.ndiff(lines["her_ddpg.py"], lines["reengage.py"]) if line[:1] in "+-"]
    assert len(changed) <= 150
