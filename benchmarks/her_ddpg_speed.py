"""Wall time of the default `python her_ddpg.py --env FetchReach` as a ratio to random-action stepping of FetchReach
for the same number of env steps, both measured in this one run on this machine.

    python benchmarks/her_ddpg_speed.py [--seeds 1 2 3] [-- extra her_ddpg.py arguments]

The ratio is what training costs on top of simulating: updates, evaluation episodes, start-up (imports). Run it on
an otherwise idle machine; other load changes both numbers.
"""

import argparse
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import envs  # noqa: E402


def random_stepping_seconds(steps):
    env = envs.make("FetchReach")
    env.action_space.seed(0)
    env.reset(seed=0)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    return time.perf_counter() - start


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--steps", type=int, default=5000, help="must match her_ddpg.py's --total-timesteps")
    args, extra = parser.parse_known_args()
    base = random_stepping_seconds(args.steps)
    print(f"random-action FetchReach, {args.steps} steps, one env: {base:.1f} s")
    for seed in args.seeds:
        cmd = [sys.executable, os.path.join(ROOT, "her_ddpg.py"), "--env", "FetchReach", "--seed", str(seed), *extra]
        start = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True).stdout
        wall = time.perf_counter() - start
        success = re.findall(r"success (\d\.\d+)", out)[-1]
        print(f"her_ddpg.py seed {seed} {' '.join(extra)}: {wall:.1f} s wall, final success {success}, "
              f"ratio {wall / base:.2f}x")
