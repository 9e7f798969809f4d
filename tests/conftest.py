"""Shared test helpers: the repo root on sys.path, and one way to run a script as a user would."""

import glob
import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def run_script(script, *args, cwd, timeout=300):
    """Run `python <script> <args>` from `cwd` (so runs/ lands there) and return the CompletedProcess."""
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


HARNESS = r"""
import json, os, runpy, sys, tempfile, traceback, warnings
results = []
for cwd, argv in json.loads(sys.argv[1]):
    os.chdir(cwd)
    sys.argv = argv
    files, saved = [tempfile.TemporaryFile("w+") for _ in "12"], [os.dup(1), os.dup(2)]
    for fd, f in ((1, files[0]), (2, files[1])):
        os.dup2(f.fileno(), fd)
    code = 0
    try:
        with warnings.catch_warnings():  # each run shows its own warnings, as a new process would
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as e:  # what the interpreter would do with it
        code = e.code if isinstance(e.code, int) else 0 if e.code is None else print(e.code, file=sys.stderr) or 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, s in ((1, saved[0]), (2, saved[1])):
            os.dup2(s, fd)
    for f in files:
        f.seek(0)
    results.append([code, files[0].read(), files[1].read()])
print(json.dumps(results))
"""


def run_in_one_process(runs):
    """Run [(cwd, [script, args...]), ...] one after the other in one Python process; returns, per run, what a process
    of its own would give: returncode, stdout, stderr."""
    runs = [(str(cwd), [os.path.join(ROOT, argv[0]), *argv[1:]]) for cwd, argv in runs]
    out = subprocess.run([sys.executable, "-c", HARNESS, json.dumps(runs)], env={**os.environ, "PYTHONPATH": ROOT},
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return [SimpleNamespace(returncode=c, stdout=o, stderr=e) for c, o, e in json.loads(out.stdout.splitlines()[-1])]


def eval_lines(stdout):
    """A script's per-evaluation console lines without the timing columns."""
    return [line.split("| SPS")[0] for line in stdout.splitlines() if line.startswith("step ")]


class IndexGoalEnv:
    """A stand-in env whose reward says whether the goal equals the achieved goal, for sampler tests."""

    def compute_reward(self, ag, g, info):
        return -(np.abs(ag - g).max(-1) > 1e-6).astype(np.float32)

    def compute_terminated(self, ag, g, info):
        return False


def indexed_episodes(n_episodes, T, ep_len=None):
    """Episodes whose observation and achieved goal at step t of episode e are (e, t), whose desired goal is (-1, -1):
    the arguments (obs, ag, g, actions, ep_len) of an EpisodeBuffer's store()."""
    e, t = np.meshgrid(np.arange(n_episodes), np.arange(T + 1), indexing="ij")
    ag = np.stack([e, t], -1).astype(np.float32)
    lengths = np.full(n_episodes, T) if ep_len is None else ep_len
    return ag, ag, -np.ones((n_episodes, T, 2), np.float32), np.zeros((n_episodes, T, 1), np.float32), lengths


def assert_one_line_error(out, message):
    """A user mistake ends the script with a nonzero status and one line on stderr naming the problem."""
    assert out.returncode != 0
    assert message in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def train_save_and_reload(run, tmp_path, command, env, *args, n_test=3):
    """Train `command` (["script.py", subcommand...]) on `env` with --save-model, check the run directory, then
    evaluate the checkpoint; returns the training stdout and the checkpoint's path."""
    out = run(*command, "--env", env, "--save-model", *args)
    assert out.returncode == 0, out.stderr
    assert eval_lines(out.stdout), out.stdout
    [ckpt] = glob.glob(str(tmp_path / "runs" / "*" / command[0].replace(".py", ".pt")))
    assert glob.glob(str(tmp_path / "runs" / "*" / "events.out.tfevents.*"))
    evaluation = run(*command, "--eval-checkpoint", ckpt, "--n-test-rollouts", str(n_test))
    assert evaluation.returncode == 0, evaluation.stderr
    pattern = rf"{re.escape(env)}: success rate \d\.\d+, mean return -?\d+\.\d+ over {n_test} episodes"
    assert re.search(pattern, evaluation.stdout), evaluation.stdout
    return out.stdout, ckpt


def final_success(stdout):
    """The success rate on a script's last console evaluation line."""
    return float(re.findall(r"success (\d\.\d+)", stdout)[-1])


@pytest.fixture
def run(tmp_path):
    """run("her_ddpg.py", "--env", ...) in a fresh directory."""
    return lambda script, *args, timeout=300: run_script(script, *args, cwd=tmp_path, timeout=timeout)
