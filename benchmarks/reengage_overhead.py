"""Wall time of reengage.py and multi_reengage.py with and without the gradient term, measured in this one run.

    python benchmarks/reengage_overhead.py [--repeats 2] [--only DriveSeek]

reengage.py: ContinuousSeek d = 20 in the seek regime (batch 512, 2 x 256) and HandReach in the baselines regime
(3 x 256, batch 256). multi_reengage.py: DriveSeek and NoisySeek with the script's defaults (1,000 warm-up steps,
then one update per env step). Runs alternate (off, on, off, on, ...) so slow drift in machine load hits both arms
alike; the overhead is the ratio of summed wall times. The paper reports +34 % to +60 % (Table 5).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = {  # name: (script, arguments, env steps, alpha)
    "ContinuousSeek d=20 (seek, alpha 0.2)": ("reengage.py", ["seek", "--env", "ContinuousSeek:d=20",
                                                              "--n-test-rollouts", "10"], 3000, "0.2"),
    "HandReach (baselines, alpha 2e-5)": ("reengage.py", ["baselines", "--env", "HandReach", "--n-test-rollouts",
                                                          "2"], 1000, "2e-5"),
    "DriveSeek (multi_reengage, alpha 20)": ("multi_reengage.py", ["--env", "DriveSeek", "--eval-interval", "3000",
                                                                   "--n-test-rollouts", "10"], 3000, "20"),
    "NoisySeek (multi_reengage, alpha 100)": ("multi_reengage.py", ["--env", "NoisySeek", "--eval-interval", "3000",
                                                                    "--n-test-rollouts", "10"], 3000, "100"),
}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--only", default="", help="run only the settings whose name contains this")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": ROOT}
    for name, (script, cli, steps, alpha) in SETTINGS.items():
        if args.only not in name:
            continue
        seconds = {"0": 0.0, alpha: 0.0}
        for _ in range(args.repeats):
            for a in seconds:
                cmd = [sys.executable, os.path.join(ROOT, script), *cli, "--total-timesteps", str(steps), "--alpha", a,
                       "--torch-threads", str(args.torch_threads)]
                with tempfile.TemporaryDirectory() as tmp:
                    start = time.perf_counter()
                    subprocess.run(cmd, cwd=tmp, env=env, check=True, capture_output=True)
                    seconds[a] += time.perf_counter() - start
        off, on = seconds["0"] / args.repeats, seconds[alpha] / args.repeats
        print(f"{name}: without {off:.1f} s, with {on:.1f} s ({1000 * off / steps:.1f} and {1000 * on / steps:.1f} s "
              f"per 1k env steps), overhead {100 * (on / off - 1):+.0f} % "
              f"({args.repeats} runs each, {args.torch_threads} torch thread(s))", flush=True)
