"""benchmarks/run.py and report.py: the experiment list runs in parallel, resumes, honours wall-time budgets, and
turns into a report."""

import json
import os
import subprocess
import sys

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))  # report.py's functions, for the unit tests below

TINY = """
[[experiment]]
name = "tiny"
paper = "HTRPO"
claim = "a claim"
seeds = [1]
common = ["--env", "BitFlip:n=3,start=zeros", "--total-timesteps", "60", "--steps-per-iter", "30",
          "--eval-interval", "30", "--n-test-rollouts", "4", "--hidden-dims", "8"]
arms = { "HTRPO" = ["htrpo.py"], "TRPO (no hindsight)" = ["htrpo.py", "--algo", "trpo"] }

[[experiment]]
name = "tiny-budget"
paper = "HTRPO"
claim = "a wall-time budget"
seeds = [1]
minutes = 0.05
common = ["--env", "BitFlip:n=3,start=zeros", "--total-timesteps", "100000000", "--steps-per-iter", "30",
          "--eval-interval", "30", "--n-test-rollouts", "4", "--hidden-dims", "8"]
arms = { "HTRPO" = ["htrpo.py"] }

[[experiment]]
name = "later"
paper = "x"
claim = "y"
arms = { "A" = ["htrpo.py"] }
"""


def bench(tmp_path, script, *args):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), "--experiments",
                          str(tmp_path / "exp.toml"), "--results", str(tmp_path / "results"), *args],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_runner_resumes_and_the_report_reads_the_runs_back(tmp_path):
    (tmp_path / "exp.toml").write_text(TINY)
    listing = bench(tmp_path, "run.py", "--list").splitlines()
    assert len(listing) == 2 + 1 + 3 and "--algo trpo --seed 1 --torch-threads 1" in listing[1]
    assert "3 runs, 0 already finished, 3 to go" in bench(tmp_path, "run.py", "--only", "tiny", "--jobs", "2")
    done = tmp_path / "results" / "tiny" / "TRPO__no_hindsight_" / "seed1" / "done.json"
    assert json.loads(done.read_text())["command"][-4:] == ["--seed", "1", "--torch-threads", "1"]
    budget = json.loads((tmp_path / "results" / "tiny-budget" / "HTRPO" / "seed1" / "done.json").read_text())
    assert budget["out_of_time"] and 2.5 < budget["wall_time"] < 60  # stopped by its 3 s budget, yet finished
    done.unlink()  # as if that run had been cut off
    assert "3 runs, 2 already finished, 1 to go" in bench(tmp_path, "run.py", "--only", "tiny")
    assert done.exists()
    bench(tmp_path, "report.py", "--out", str(tmp_path / "docs"))
    report = (tmp_path / "docs" / "results.md").read_text()
    assert "## tiny" in report and "| HTRPO | 1 |" in report and "| TRPO (no hindsight) | 1 |" in report
    row = next(line for line in report.splitlines() if line.startswith("| HTRPO | 1 |")).split(" | ")
    assert row[4] == "2"  # gradient steps, read from the run: one policy update per batch, two batches of >= 30 steps
    assert "- `later`" in report.split("## Not run yet")[1]
    assert (tmp_path / "docs" / "img" / "tiny.png").stat().st_size > 1000


def test_a_level_is_reached_by_a_value_stored_as_float32():
    """TensorBoard stores 0.9 as float32 (0.89999998): it still reaches the level 0.9."""
    import numpy as np
    from report import first_reached

    curve = (np.array([1000, 2000]), np.array([0.8, 0.9], dtype=np.float32).astype(np.float64), np.array([60.0, 120.0]))
    assert first_reached(curve, None, 0.9)[0] == 2000
    assert first_reached(curve, None, 0.95) is None


def test_a_stale_section_gets_one_stale_line_under_its_claim(tmp_path):
    """--only on an experiment whose runs are not here keeps its section and (re)writes the stale line, once."""
    from report import splice

    results = tmp_path / "results.md"
    results.write_text("## a\n\n**Paper** (p): claim\n\n| arm |\n\ntext a\n## b\n\n**Paper** (p): other\n\ntext b\n")
    for why in ("first reason", "second reason"):
        splice(str(results), {}, [{"name": "a", "stale": why}])
    a, b = results.read_text().split("## b")
    assert a.count("**Stale**") == 1 and "second reason" in a and a.index("claim") < a.index("**Stale**")
    assert a.index("**Stale**") < a.index("| arm |") and "text a" in a and "Stale" not in b and "text b" in b


def test_a_rewritten_section_replaces_its_runtime_rows_and_keeps_the_others_sorted(tmp_path):
    """--only rewrites the runtime table's rows of the experiments it rewrote, and no other row."""
    from report import splice

    results = tmp_path / "results.md"
    table = "| script | experiment | arm |\n|---|---|---|\n| `x.py` | a | A | 1 min |\n| `z.py` | b | B | 2 min |\n"
    results.write_text(f"## a\n\nold a\n## b\n\ntext b\n## Runtime\n\nintro\n\n{table}\nafter\n")
    splice(str(results), {"a": ["## a", "", "new a"]}, [], ["| `y.py` | a | A | 3 min |"])
    text = results.read_text()
    assert "new a" in text and "old a" not in text and "text b" in text and text.endswith("\nafter\n")
    assert text.split("|---|---|---|\n")[1].startswith("| `y.py` | a | A | 3 min |\n| `z.py` | b | B | 2 min |\n")
    assert "1 min" not in text


def test_a_torchrun_run_alone_is_labelled_alone():
    """Two torchrun workers, or one process on 2 torch threads, load a 2-core machine to about 2 by themselves: that
    is alone; one single-threaded process at 2 is not."""
    from report import load_label, processes

    two = processes({"launcher": ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]})
    assert two == 2 and processes({}) == 1 and processes({"threads": 2}) == 2
    assert load_label([2.2], 2, two) == "alone" and load_label([2.2], 2, 1).startswith("shared")
