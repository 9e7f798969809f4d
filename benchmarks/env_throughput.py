"""Env steps per second with random actions, through envs.make (wrappers included), one process, one env.

    python benchmarks/env_throughput.py [--steps 20000]

Prints a markdown table. Not a test: timings depend on the machine and its load, so state both with the numbers.
"""

import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import envs  # noqa: E402

TASKS = ["ContinuousSeek:d=10", "DriveSeek", "NoisySeek", "BitFlip:n=16", "Point2D", "Point2DFourRoom", "FourRooms",
         "EmptyMaze", "FourRoomMaze", "Navigation:k=10", "GoalReacher", "FetchReach", "FetchPush"]


def steps_per_second(name, steps):
    env = envs.make(name)
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(1000)]
    env.reset(seed=0)
    start = time.perf_counter()
    for i in range(steps):
        _, _, terminated, truncated, _ = env.step(actions[i % 1000])
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000, help="env steps per task (MuJoCo tasks get a tenth)")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}\n\n| env | steps/s |\n|---|---|")
    for name in TASKS:
        slow = name.startswith(("Fetch", "GoalReacher"))
        print(f"| {name} | {steps_per_second(name, args.steps // 10 if slow else args.steps):,.0f} |", flush=True)
