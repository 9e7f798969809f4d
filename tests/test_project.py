"""Project files: CI runs exactly the README's test command, every algorithm file stands alone, and every script
keeps its checkpoint when interrupted."""

import ast
import glob
import os
import re
import signal
import subprocess
import sys

import pytest

from conftest import ROOT


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


LONG_RUNS = {
    "her_ddpg.py": ["--n-cycles", "1"],
    "reengage.py": ["baselines", "--n-cycles", "1"],
    "hem.py": ["--eval-interval", "100"],
    "mher.py": ["--n-cycles", "1", "--random-episodes", "1", "--dyn-warmup", "1"],
}


@pytest.mark.parametrize("script", sorted(LONG_RUNS))
def test_ctrl_c_saves_the_checkpoint(tmp_path, script):
    args = [*LONG_RUNS[script], "--env", "Point2D", "--save-model", "--total-timesteps", "10000000", "--hidden-dim",
            "32"]
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, script), *args], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": ROOT}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().startswith("epoch")  # training is under way
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "interrupted at step" in out and "Traceback" not in err
    assert glob.glob(str(tmp_path / "runs" / "*" / script.replace(".py", ".pt")))
