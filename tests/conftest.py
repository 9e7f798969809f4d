"""Shared test helpers: the repo root on sys.path, and one way to run a script as a user would."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def run_script(script, *args, cwd, timeout=300):
    """Run `python <script> <args>` from `cwd` (so runs/ lands there) and return the CompletedProcess."""
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def final_success(stdout):
    """The success rate on a script's last console evaluation line."""
    return float(re.findall(r"success (\d\.\d+)", stdout)[-1])


@pytest.fixture
def run(tmp_path):
    """run("her_ddpg.py", "--env", ...) in a fresh directory."""
    return lambda script, *args, timeout=300: run_script(script, *args, cwd=tmp_path, timeout=timeout)
