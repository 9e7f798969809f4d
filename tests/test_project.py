"""Project files and what every script promises: CI runs exactly the README's test command, algorithm files stand
alone, an interrupted run keeps its checkpoint, and the same seed gives the same run."""

import ast
import glob
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, eval_lines, run_script

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
    "reengage_sac.py": ["--env", "Point2D", "--eval-interval", "200", "--hidden-dims", "32"],
    "hem.py": ["--env", "Point2D", "--eval-interval", "100", "--hidden-dims", "32"],
    "mher.py": ["--env", "Point2D", "--eval-interval", "100", "--random-episodes", "1", "--dyn-warmup", "1",
                "--hidden-dims", "32"],
    "hdm.py": ["--env", "Point2D", "--eval-interval", "100", "--random-episodes", "1", "--hidden-dims", "32", "32"],
    "htrpo.py": ["--env", "BitFlip:n=4", "--steps-per-iter", "40", "--eval-interval", "40", "--hidden-dims", "32"],
    "multi_reengage.py": ["--env", "DriveSeek", "--random-episodes", "1", "--eval-interval", "80", "--encoder-dims",
                          "16", "16", "--hidden-dims", "16", "--n-test-rollouts", "2"],
}


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
    "reengage.py": (["--env", "ContinuousSeek:d=2", "--total-timesteps", "400", "--eval-interval", "100",
                     "--random-episodes", "10", "--batch-size", "64", "--n-test-rollouts", "10", "--hidden-dims", "32"],
                    "actor"),
    "reengage_sac.py": (["--env", "ContinuousSeek:d=2", "--total-timesteps", "400", "--eval-interval", "100",
                         "--random-episodes", "10", "--batch-size", "64", "--n-test-rollouts", "10", "--hidden-dims",
                         "32"], "actor"),
    "hem.py": (["--env", "Navigation:k=2", "--total-timesteps", "300", "--n-episodes", "2", "--n-batches", "3",
                "--eval-interval", "100", "--n-test-rollouts", "5", "--hidden-dims", "32"], "policy"),
    "mher.py": (["--env", "Point2D", "--total-timesteps", "600", "--random-episodes", "3", "--eval-interval", "100",
                 "--n-batches", "2", "--dyn-warmup", "2", "--n-test-rollouts", "2", "--hidden-dims", "32"], "actor"),
    "hdm.py": (["--env", "FourRooms", "--total-timesteps", "300", "--random-episodes", "2", "--eval-interval", "100",
                "--n-test-rollouts", "2", "--hidden-dims", "32", "32"], "q_net"),
    "htrpo.py": (["--env", "BitFlip:n=4,start=zeros", "--total-timesteps", "240", "--steps-per-iter", "40",
                  "--eval-interval", "80", "--n-test-rollouts", "10", "--hidden-dims", "16"], "policy"),
    "multi_reengage.py": (["--env", "NoisySeek", "--total-timesteps", "240", "--random-episodes", "2",
                           "--eval-interval", "80", "--batch-size", "16", "--encoder-dims", "16", "16", "--hidden-dims",
                           "16", "--n-test-rollouts", "3"], "actor"),
}


@pytest.mark.parametrize("script", sorted(SHORT_RUNS))
def test_same_seed_same_evaluation_curve_and_weights(tmp_path, script):
    """Same seed, same machine: identical evaluation lines and bit-identical weights; another seed differs. Every
    evaluation logs the gradient steps so far."""
    args, key = SHORT_RUNS[script]

    def train(seed, name):
        (tmp_path / name).mkdir()
        out = run_script(script, *args, "--seed", str(seed), "--save-model", cwd=tmp_path / name)
        [ckpt] = glob.glob(str(tmp_path / name / "runs" / "*" / script.replace(".py", ".pt")))
        return eval_lines(out.stdout), torch.load(ckpt, weights_only=False)[key]

    (lines_a, net_a), (lines_b, net_b), (_, net_c) = train(7, "a"), train(7, "b"), train(8, "c")
    assert lines_a == lines_b and len(lines_a) >= 2
    grads = read_curve(str(tmp_path / "a"), "charts/gradient_steps")[1]  # what the report's column reads
    assert len(grads) == len(lines_a) and grads[-1] > 0 and (np.diff(grads) >= 0).all()
    assert all(torch.equal(net_a[k], net_b[k]) for k in net_a)
    assert not all(torch.equal(net_a[k], net_c[k]) for k in net_a)


SCRIPTS = sorted(SHORT_RUNS)
BELOW_WARMUP = {  # budgets shorter than the warm-up (or than one round of episodes)
    "her_ddpg.py": ["--env", "FetchReach", "--total-timesteps", "1", "--n-batches", "1", "--n-test-rollouts", "2",
                    "--hidden-dims", "16"],
    "hdm.py": ["--env", "FourRooms", "--total-timesteps", "100", "--random-episodes", "5", "--n-test-rollouts", "2",
               "--hidden-dims", "16"],
    "hem.py": ["--env", "FetchReach", "--total-timesteps", "1", "--n-test-rollouts", "2", "--hidden-dims", "16"],
    "htrpo.py": ["--env", "BitFlip:n=4,start=zeros", "--total-timesteps", "1", "--steps-per-iter", "40",
                 "--n-test-rollouts", "4", "--hidden-dims", "16"],
    "reengage.py": ["--env", "ContinuousSeek:d=2", "--total-timesteps", "50", "--n-test-rollouts", "2",
                    "--hidden-dims", "16"],
    "reengage_sac.py": ["--env", "ContinuousSeek:d=2", "--total-timesteps", "50", "--n-test-rollouts", "2",
                        "--hidden-dims", "16"],
    "mher.py": ["--env", "Point2D", "--total-timesteps", "150", "--n-test-rollouts", "2", "--hidden-dims", "16"],
    "multi_reengage.py": ["--total-timesteps", "50", "--n-test-rollouts", "2", "--encoder-dims", "16", "16",
                          "--hidden-dims", "16"],
}


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_budget_below_the_warm_up_still_ends_with_an_evaluation_and_the_summary(tmp_path, script):
    out = run_script(script, *BELOW_WARMUP[script], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
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


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(tmp_path, script):
    import pickle

    marker = tmp_path / "pwned"
    for name, save in [("raw.pt", lambda obj, f: pickle.dump(obj, f)), ("zip.pt", torch.save)]:
        with open(tmp_path / name, "wb") as f:
            save({"algo": script[:-3], "actor": RunsCode(marker)}, f)
        out = run_script(script, "--eval-checkpoint", str(tmp_path / name), cwd=tmp_path)
        assert out.returncode != 0 and "not a" in out.stderr and "checkpoint" in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr, out.stderr
        assert not marker.exists()


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_file_that_is_not_a_checkpoint_gets_one_line(tmp_path, script):
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    out = run_script(script, "--eval-checkpoint", str(tmp_path / "notes.txt"), cwd=tmp_path)
    assert out.returncode != 0 and "not a" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr, out.stderr
