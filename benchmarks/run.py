"""Run the experiment list (benchmarks/experiments.toml): experiments x arms x seeds, in parallel local processes.

    python benchmarks/run.py                          # everything, as many processes as CPU cores
    python benchmarks/run.py --only mher --jobs 2     # experiments whose name contains "mher"
    python benchmarks/run.py --list                   # one shell command per run (for a cluster launcher)
    python benchmarks/run.py --index 7                # only run number 7 of the list (a Slurm array task)

An experiment with `minutes = m` has a wall-time budget: its runs are stopped after m minutes (SIGTERM: the script
saves and exits) and count as finished. Each run lives in benchmarks/results/<experiment>/<arm>/seed<k>/: the
script runs there (so its TensorBoard files land in runs/), with its console output in stdout.log and, once it has
finished, done.json. Running again resumes: finished runs are skipped and a run cut off half-way is started again
from scratch. benchmarks/report.py reads the results back from the event files.
"""

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = os.path.join(ROOT, "benchmarks", "experiments.toml")
RESULTS = os.path.join(ROOT, "benchmarks", "results")


def load(path=EXPERIMENTS):
    with open(path, "rb") as f:
        return tomllib.load(f)["experiment"]


def runs(experiments, only="", results=RESULTS):
    """Every (experiment, arm, seed) as a dict with its directory and command, in a fixed order."""
    out = []
    for exp in experiments:
        if only not in exp["name"]:
            continue
        for arm, (script, *arm_args) in exp["arms"].items():
            for seed in exp.get("seeds", [1, 2, 3]):
                # a subcommand (reengage.py seek) must come before the flags
                head = arm_args[:1] if arm_args and not arm_args[0].startswith("-") else []
                args = [*head, *exp.get("common", []), *arm_args[len(head):], "--seed", str(seed),
                        "--torch-threads", str(exp.get("threads", 1))]
                out.append({"experiment": exp["name"], "arm": arm, "seed": seed, "minutes": exp.get("minutes"),
                            "dir": os.path.join(results, exp["name"], re.sub(r"[^\w.+-]", "_", arm), f"seed{seed}"),
                            "command": [sys.executable, *exp.get("launcher", []), os.path.join(ROOT, script), *args]})
    return out


def finished(run):
    return os.path.isfile(os.path.join(run["dir"], "done.json"))


def execute(run):
    """Run one experiment run to completion in its own directory; returns its exit status."""
    if finished(run):
        return 0
    shutil.rmtree(run["dir"], ignore_errors=True)  # a run cut off half-way starts again
    os.makedirs(run["dir"])
    start, out_of_time = time.time(), False
    with open(os.path.join(run["dir"], "stdout.log"), "w") as log:
        proc = subprocess.Popen(run["command"], cwd=run["dir"], stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": ROOT})
        loads, rc = [], None  # the machine's 1-minute load average, once a minute: says whether the run shared it
        deadline = start + 60 * run["minutes"] if run["minutes"] else None
        while rc is None:
            try:
                rc = proc.wait(timeout=60 if deadline is None else max(0.1, min(60, deadline - time.time())))
            except subprocess.TimeoutExpired:
                loads.append(os.getloadavg()[0])
                if deadline and time.time() >= deadline:  # a wall-time budget: SIGTERM
                    out_of_time = True  # makes the script stop like Ctrl-C does
                    proc.terminate()
                    proc.wait()
                    rc = 0  # stopped by its budget: finished (even if SIGTERM came before the script could catch it)
    with open(os.path.join(run["dir"], "stdout.log")) as log:
        # Ctrl-C reaches the script too: it saves and exits 0, but the run is not finished
        interrupted = "interrupted at step" in log.read() and not out_of_time
    if rc == 0 and not interrupted:
        with open(os.path.join(run["dir"], "done.json"), "w") as f:
            json.dump({"command": run["command"], "wall_time": time.time() - start, "out_of_time": out_of_time,
                       "load": float(np.mean(loads)) if loads else None, "cores": os.cpu_count(),
                       "finished": time.strftime("%Y-%m-%d %H:%M:%S")}, f)
    rc = rc or int(interrupted)
    print(f"{'done' if rc == 0 else f'FAILED ({rc})'}: {run['experiment']} / {run['arm']} / seed {run['seed']} "
          f"in {time.time() - start:.0f} s", flush=True)
    return rc


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", default=EXPERIMENTS, help="the experiment list (TOML)")
    parser.add_argument("--results", default=RESULTS, help="where the runs go")
    parser.add_argument("--only", default="", help="run only the experiments whose name contains this")
    parser.add_argument("--jobs", type=int, default=os.cpu_count(), help="parallel processes")
    parser.add_argument("--list", action="store_true", help="print one shell command per run and exit")
    parser.add_argument("--index", type=int, help="run only this run of the list (0-based)")
    args = parser.parse_args()
    todo = runs(load(args.experiments), args.only, args.results)
    if args.list:
        for run in todo:
            print(f"cd {shlex.quote(run['dir'])} && {shlex.join(run['command'])}")
        return 0
    if args.index is not None:
        if not 0 <= args.index < len(todo):
            sys.exit(f"error: --index must be in [0, {len(todo)}), got {args.index}")
        return execute(todo[args.index])
    left = [run for run in todo if not finished(run)]
    print(f"{len(todo)} runs, {len(todo) - len(left)} already finished, {len(left)} to go, {args.jobs} at a time",
          flush=True)
    try:
        with ThreadPoolExecutor(args.jobs) as pool:
            failed = sum(rc != 0 for rc in pool.map(execute, left))
    except KeyboardInterrupt:  # the runs got the Ctrl-C too and have stopped; rerunning resumes
        sys.exit("interrupted; run the same command again to resume")
    print(f"finished; {failed} failed" if failed else "finished", flush=True)
    return int(failed > 0)


if __name__ == "__main__":
    sys.exit(main())
