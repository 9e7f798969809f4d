"""Project files: CI runs exactly the README's test command, and every algorithm file stands alone."""

import ast
import os
import re

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
