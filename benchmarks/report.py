"""Write docs/results.md and its figures from the runs in benchmarks/results/ (made by benchmarks/run.py).

    python benchmarks/report.py [--experiments benchmarks/experiments.toml] [--results benchmarks/results] [--out docs]

Per experiment of benchmarks/experiments.toml: the paper's claim, a table of our numbers per arm (final value =
mean of the last three evaluations of each seed, then mean +- std over seeds; env steps; gradient steps, i.e. the
actor's or policy's updates as logged in `charts/gradient_steps`; wall time; env steps per second) and one PNG with
the curves against env steps and against wall time (thin lines: seeds; thick: their mean).
Experiments with no finished run are listed as not run. Needs matplotlib (benchmarks/requirements.txt).
"""

import argparse
import glob
import json
import os
import platform
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import EngFormatter  # noqa: E402
import numpy as np  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import EXPERIMENTS, RESULTS, ROOT, load, runs  # noqa: E402


def read_curve(run_dir, tag):
    """(env steps, values, seconds since the run's first event) of one scalar tag, or None if absent."""
    files = glob.glob(os.path.join(run_dir, "runs", "*"))
    if not files:
        return None
    events = EventAccumulator(files[0], size_guidance={"scalars": 0})
    events.Reload()
    if tag not in events.Tags()["scalars"]:
        return None
    scalars = events.Scalars(tag)
    start = min(s.wall_time for tag_ in events.Tags()["scalars"] for s in events.Scalars(tag_)[:1])
    return (np.array([s.step for s in scalars]), np.array([s.value for s in scalars]),
            np.array([s.wall_time - start for s in scalars]))


def summarise(exp, results):
    """Per arm: the finished seeds' curves and the table row."""
    metric = exp.get("metric", "eval/success_rate")
    arms = {}
    for run in runs([exp], results=results):
        if not os.path.isfile(os.path.join(run["dir"], "done.json")):
            continue
        curve = read_curve(run["dir"], metric)
        sps = read_curve(run["dir"], "charts/SPS")
        grads = read_curve(run["dir"], "charts/gradient_steps")
        if curve is None:
            continue
        with open(os.path.join(run["dir"], "done.json")) as f:
            done = json.load(f)
        wall = done["wall_time"]
        arm = arms.setdefault(run["arm"], {"curves": [], "final": [], "steps": [], "grads": [], "wall": [],
                                           "sps": [], "notes": [], "load": [], "first": []})
        arm["load"].append(done.get("load") or np.nan)  # the machine's mean load while the run ran
        arm["first"].append({level: first_reached(curve, grads, level) for level in exp.get("thresholds", [])})
        if "note" in done:  # a run made outside the runner, by the same command
            arm["notes"].append((done["note"], f"{run['arm']} seed {run['seed']}"))
        arm["curves"].append(curve)
        arm["final"].append(curve[1][-3:].mean())
        arm["steps"].append(curve[0][-1])
        arm["wall"].append(wall)
        arm["sps"].append(sps[1][-1] if sps is not None else np.nan)
        arm["grads"].append(grads[1][-1] if grads is not None else np.nan)  # not logged by runs before 2026-11-22
    return metric, arms


def first_reached(curve, grads, level):
    """(env steps, gradient steps, minutes) at the first evaluation >= level, or None if never reached."""
    steps, values, seconds = curve
    hits = np.flatnonzero(values >= level - 1e-6)  # TensorBoard keeps float32: 0.9 is stored as 0.89999998
    if not len(hits):
        return None
    i = hits[0]
    grad = np.interp(steps[i], grads[0], grads[1]) if grads is not None else np.nan
    return steps[i], grad, seconds[i] / 60


def load_label(loads, cores, processes=1):
    """'alone' when the machine's mean load stayed near the run's own (processes x threads), else how busy it was."""
    loads = np.array(loads, float)
    if np.isnan(loads).all():
        return "not recorded"
    return ", ".join("alone" if v < processes + 0.5 else f"shared (load {v:.1f} on {cores} cores)" for v in loads)


def processes(exp):
    """A run's own load: its processes (torchrun's --nproc_per_node, else 1) times the torch threads of each."""
    launcher = exp.get("launcher", [])
    n = int(launcher[launcher.index("--nproc_per_node") + 1]) if "--nproc_per_node" in launcher else 1
    return n * exp.get("threads", 1)


def count(values):
    """Mean of a per-seed count, or 'not logged' when no run logged it."""
    return "not logged" if np.isnan(values).all() else f"{int(np.nanmean(values)):,}"


def plot(exp, metric, arms, path):
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for i, (label, arm) in enumerate(arms.items()):
        color = f"C{i}"
        for steps, values, seconds in arm["curves"]:
            axes[0].plot(steps, values, color=color, alpha=0.3, lw=0.8)
            axes[1].plot(seconds / 60, values, color=color, alpha=0.3, lw=0.8)
        n = min(len(c[0]) for c in arm["curves"])  # the mean over seeds where every seed has an evaluation
        mean = np.mean([c[1][:n] for c in arm["curves"]], 0)
        axes[0].plot(arm["curves"][0][0][:n], mean, color=color, lw=2, label=f"{label} ({len(arm['curves'])} seeds)")
        axes[1].plot(np.mean([c[2][:n] for c in arm["curves"]], 0) / 60, mean, color=color, lw=2)
    axes[0].set_xlabel("env steps")
    axes[0].xaxis.set_major_formatter(EngFormatter(sep=""))  # 200k, not 200000 (long labels overlap)
    axes[1].set_xlabel(f"wall time (min, {os.cpu_count()}-core machine; see the machine column)")
    for ax in axes:
        ax.set_ylabel(metric.split("/")[-1].replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(exp["name"], fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def section(exp, metric, arms, out, runtime):
    """The markdown lines of one experiment with results; writes its figure and adds its runtime rows."""
    lines = [f"## {exp['name']}", "", f"**Paper** ({exp['paper']}): {exp['claim']}", ""]
    if "budget" in exp:
        lines += [f"**Budget**: {exp['budget']}", ""]
    if "stale" in exp:
        lines += [stale_line(exp), ""]
    lines += [f"| arm | seeds | final {metric} | env steps | gradient steps | wall time per run | env steps / s | "
              "machine |", "|---|---|---|---|---|---|---|---|"]
    for label, arm in arms.items():
        final = np.array(arm["final"])
        spread = f" +- {final.std():.2f}" if len(final) > 1 else ""
        walls = ", ".join(f"{w / 60:.0f}" for w in arm["wall"])
        lines.append(f"| {label} | {len(final)} | {final.mean():.2f}{spread} ({', '.join(f'{v:.2f}' for v in final)})"
                     f" | {int(np.mean(arm['steps'])):,} | {count(arm['grads'])} | "
                     f"{np.mean(arm['wall']) / 60:.1f} min ({walls}) | {np.nanmean(arm['sps']):.0f} | "
                     f"{load_label(arm['load'], os.cpu_count(), processes(exp))} |")
        runtime.append(f"| `{exp['arms'][label][0]}` | {exp['name']} | {label} | {int(np.mean(arm['steps'])):,} | "
                       f"{np.mean(arm['wall']) / 60:.1f} min | {np.nanmean(arm['sps']):.0f} |")
    if exp.get("thresholds"):
        lines += ["", "First evaluation at or above each level, per seed (env steps / gradient steps / wall minutes):",
                  "", "| arm | " + " | ".join(f"first >= {lv}" for lv in exp["thresholds"]) + " |",
                  "|---|" + "---|" * len(exp["thresholds"])]
        for label, arm in arms.items():
            cells = []
            for level in exp["thresholds"]:
                hits = [f[level] for f in arm["first"]]
                cells.append("; ".join("never" if h is None else f"{h[0] / 1e3:,.0f}k / {h[1] / 1e3:,.1f}k / "
                                       f"{h[2]:.0f} min" for h in hits))
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    image = f"img/{exp['name']}.png"
    plot(exp, metric, arms, os.path.join(out, image))
    notes = {}
    for arm in arms.values():
        for text, which in arm["notes"]:
            notes.setdefault(text, []).append(which)
    for text, which in notes.items():
        lines += ["", f"Note: {', '.join(which)}: {text}."]
    lines += ["", f"![{exp['name']}]({image})", ""]
    if "notes" in exp:
        lines += [exp["notes"], ""]
    return lines


def stale_line(exp):
    return f"**Stale**: {exp['stale']}"


def splice(path, sections, stale=(), runtime=()):
    """Replace (or add, before the runtime table) the named sections of an existing results.md; keep the rest.
    Experiments in stale whose runs are not here keep their section, with the stale line (re)written under its claim.
    The runtime table's rows of the named sections are replaced by the rows in runtime, and the table kept sorted."""
    with open(path) as f:
        text = f.read()
    rows = re.findall(r"^\| `.*\n", text[text.find("## Runtime"):], flags=re.M) if "## Runtime" in text else []
    if rows and runtime:
        kept = [r for r in rows if r.split(" | ")[1] not in sections]
        table = "".join(sorted(kept + [r + "\n" for r in runtime]))
        start = text.index(rows[0], text.find("## Runtime"))
        text = text[:start] + table + text[start + len("".join(rows)):]
    for exp in stale:
        start = text.find(f"## {exp['name']}\n")
        if start < 0:
            continue
        end = text.find("\n## ", start + 1)
        end = len(text) if end < 0 else end + 1
        body = re.sub(r"^\*\*Stale\*\*:.*\n\n", "", text[start:end], flags=re.M)
        claim = body.find("\n\n", body.find("**Paper**")) + 2  # after the claim's paragraph
        text = text[:start] + body[:claim] + stale_line(exp) + "\n\n" + body[claim:] + text[end:]
    for name, lines in sections.items():
        block = "\n".join(lines) + "\n"
        start = text.find(f"## {name}\n")
        if start < 0:
            start = end = text.find("## Runtime") if "## Runtime" in text else len(text)
        else:
            end = text.find("\n## ", start + 1)
            end = len(text) if end < 0 else end + 1
        text = text[:start] + block + text[end:]
        text = re.sub(rf"^- `{re.escape(name)}`.*\n", "", text, flags=re.M)  # no longer "not run yet"
    with open(path, "w") as f:
        f.write(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", default=EXPERIMENTS, help="the experiment list (TOML)")
    parser.add_argument("--results", default=RESULTS, help="where benchmarks/run.py put the runs")
    parser.add_argument("--out", default=os.path.join(ROOT, "docs"), help="where results.md and img/ go")
    parser.add_argument("--only", help="rewrite only the sections of experiments whose name contains this, in the "
                        "existing results.md (for a checkout that holds only some experiments' runs)")
    args = parser.parse_args()
    experiments = load(args.experiments)
    os.makedirs(os.path.join(args.out, "img"), exist_ok=True)
    if args.only:
        sections, stale, runtime = {}, [], []
        for exp in experiments:
            if args.only in exp["name"]:
                metric, arms = summarise(exp, args.results)
                if arms:
                    sections[exp["name"]] = section(exp, metric, arms, args.out, runtime)
                elif "stale" in exp:
                    stale.append(exp)
        splice(os.path.join(args.out, "results.md"), sections, stale, runtime)
        print(f"rewrote {', '.join(sections) or 'nothing'}, marked {', '.join(e['name'] for e in stale) or 'nothing'} "
              f"stale in {os.path.join(args.out, 'results.md')}")
        return
    lines = ["# Reproduction results", "",
             "Generated by `python benchmarks/report.py` from the runs of `python benchmarks/run.py` (the experiment "
             "list is `benchmarks/experiments.toml`). Final = mean of the last three evaluations of each seed, then "
             "mean +- std over seeds. Wall time is per run (mean, then each seed's minutes); the machine column says "
             f"whether the run had the machine to itself ({os.cpu_count()} cores, {platform.machine()}, "
             f"{platform.python_version()}, CPU only) or shared it, from its mean load. Gradient steps are the "
             "actor's or policy's updates (`charts/gradient_steps`, mean over seeds); runs made before the scripts "
             "logged them show 'not logged'.", ""]
    not_run, runtime = [], []
    for exp in experiments:
        metric, arms = summarise(exp, args.results)
        if not arms:
            not_run.append(exp)
            continue
        lines += section(exp, metric, arms, args.out, runtime)
    if runtime:
        lines += ["## Runtime", "", f"Every finished arm above, on this machine ({os.cpu_count()} cores, CPU only; "
                  "runs may have shared it with others, so these are lower bounds on speed). `multi_reengage.py` has "
                  "no FetchReach row: it needs an env with many goals at once and a per-goal reward.", "",
                  "| script | experiment | arm | env steps | wall time per run | env steps / s |", "|---|---|---|---|---|---|"]
        lines += sorted(runtime) + [""]
    if not_run:
        lines += ["## Not run yet", "", "These experiments of the list have no finished run in this report:", ""]
        lines += [f"- `{exp['name']}`" + (f": {exp['notes']}" if "notes" in exp else "") for exp in not_run] + [""]
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {os.path.join(args.out, 'results.md')} ({len(experiments) - len(not_run)} experiments with "
          f"results, {len(not_run)} not run)")


if __name__ == "__main__":
    main()
