"""Wall time of reengage_seek.py, reengage.py and multi_reengage.py with and without the gradient term, in one run.

    python benchmarks/reengage_overhead.py [--repeats 2] [--only DriveSeek]

reengage_seek.py: ContinuousSeek d = 20 (batch 512, 2 x 256); reengage.py: HandReach in the baselines recipe (3 x 256,
batch 256). multi_reengage.py: DriveSeek and NoisySeek with the script's defaults (1,000 warm-up steps,
then one update per env step) as whole runs, then single gradient steps interleaved in blocks in one process. Whole
runs alternate (off, on, off, on, ...) so slow drift in machine load hits both arms alike; the overhead is the ratio
of summed wall times. The paper reports +34 % to +60 % (Table 5).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = {  # name: (script, arguments, env steps, alpha)
    "ContinuousSeek d=20 (seek, alpha 0.2)": ("reengage_seek.py", ["--env", "ContinuousSeek:d=20",
                                                                   "--n-test-rollouts", "10"], 3000, "0.2"),
    "HandReach (baselines, alpha 2e-5)": ("reengage.py", ["--env", "HandReach", "--n-test-rollouts",
                                                          "2"], 1000, "2e-5"),
    "DriveSeek (multi_reengage, alpha 20)": ("multi_reengage.py", ["--env", "DriveSeek", "--eval-interval", "3000",
                                                                   "--n-test-rollouts", "10"], 3000, "20"),
    "NoisySeek (multi_reengage, alpha 100)": ("multi_reengage.py", ["--env", "NoisySeek", "--eval-interval", "3000",
                                                                    "--n-test-rollouts", "10"], 3000, "100"),
}

def multi_reengage_updates(env_name, alpha, blocks=10, per_block=20):
    """Milliseconds per gradient step of multi_reengage.py at its default sizes, with and without the gate term,
    interleaved in blocks within this one process so that machine load hits both alike."""
    import numpy as np
    import torch

    sys.path.insert(0, ROOT)
    import envs
    import multi_reengage as mr

    torch.set_num_threads(1)
    env = envs.make(env_name)
    args = mr.fill_defaults(mr.Args(env=env_name))
    rng = np.random.default_rng(0)
    actor, critic = mr.make_nets(env, args)
    actor_t, critic_t = mr.make_nets(env, args)
    actor_t.requires_grad_(False)
    critic_t.requires_grad_(False)
    opts = [torch.optim.Adam(net.parameters(), lr=args.lr, fused=True) for net in (actor, critic)]
    z_dim = sum(env.observation_space[k].shape[0] for k in ("achieved_goal", "observation"))
    buffer = mr.EpisodeBuffer(10_000, 40, z_dim, 2, 600, env.action_space.shape[0], env.unwrapped, rng)
    vec_env = mr.make_vec_env(args, 1)
    vec_env.reset(seed=0)
    for _ in range(25):
        ep = mr.rollout(vec_env, actor, critic, 40, "cpu", args, rng, 1.0, explore=True, random_actions=True)
        buffer.store(ep.z, ep.ag, ep.g, ep.actions)
    seconds = {0.0: 0.0, alpha: 0.0}
    for _ in range(blocks):
        for a in seconds:
            args.alpha = a
            start = time.perf_counter()
            for _ in range(per_block):
                batch = mr.Batch(*(torch.as_tensor(x) for x in buffer.sample(args.batch_size)))
                mr.update(batch, actor, critic, actor_t, critic_t, *opts, args, args.gamma)
            seconds[a] += time.perf_counter() - start
    return [1000 * seconds[a] / (blocks * per_block) for a in (0.0, alpha)]


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
    for name, alpha in (("DriveSeek", 20.0), ("NoisySeek", 100.0)):
        if args.only in f"{name} (multi_reengage updates)":
            off, on = multi_reengage_updates(name, alpha)
            print(f"{name} (multi_reengage updates, default sizes, interleaved): without {off:.1f} ms, with "
                  f"{on:.1f} ms per gradient step, overhead {100 * (on / off - 1):+.0f} %", flush=True)
