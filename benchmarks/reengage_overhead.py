"""Wall time of reengage.py with and without the gradient term, same settings, both measured in this one run.

    python benchmarks/reengage_overhead.py [--repeats 2]

Two settings, as the issue asks: ContinuousSeek d = 20 in the seek regime (batch 512, 2 x 256) and HandReach in
the baselines regime (3 x 256, batch 256). Runs alternate (off, on, off, on, ...) so slow drift in machine load
hits both arms alike; the overhead is the ratio of summed wall times. The paper reports +34 % to +60 %.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = {
    "ContinuousSeek d=20 (seek, alpha 0.2)": (["seek", "--env", "ContinuousSeek:d=20", "--total-timesteps", "3000",
                                               "--n-test-rollouts", "10"], "0.2"),
    "HandReach (baselines, alpha 2e-5)": (["baselines", "--env", "HandReach", "--total-timesteps", "1000",
                                           "--n-test-rollouts", "2"], "2e-5"),
}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": ROOT}
    for name, (cli, alpha) in SETTINGS.items():
        seconds = {"0": 0.0, alpha: 0.0}
        for _ in range(args.repeats):
            for a in seconds:
                cmd = [sys.executable, os.path.join(ROOT, "reengage.py"), *cli, "--alpha", a, "--torch-threads",
                       str(args.torch_threads)]
                with tempfile.TemporaryDirectory() as tmp:
                    start = time.perf_counter()
                    subprocess.run(cmd, cwd=tmp, env=env, check=True, capture_output=True)
                    seconds[a] += time.perf_counter() - start
        off, on = seconds["0"] / args.repeats, seconds[alpha] / args.repeats
        print(f"{name}: without {off:.1f} s, with {on:.1f} s, overhead {100 * (on / off - 1):+.0f} % "
              f"({args.repeats} runs each, {args.torch_threads} torch thread(s))", flush=True)
