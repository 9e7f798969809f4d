"""Goal-conditioned tasks for the hindsight scripts, and `make`, the one place that turns a name into an env.

    import envs
    env = envs.make("FetchReach")                 # Gymnasium-Robotics FetchReach-v4 (faster observation: envs/fetch.py)
    env = envs.make("ContinuousSeek:d=10")        # a custom task with constructor arguments
    env = envs.make("BitFlip", n=16)              # the same in Python
    env = envs.make("FetchReach", discrete=3)     # 27 joint actions (3 bins on x, y, z; the blocked gripper fixed)
    env = envs.make("FetchPush-v4")               # any full Gymnasium id passes through

Every env made here has a Dict observation {observation, achieved_goal, desired_goal}, reports
`info["is_success"]`, and its `env.unwrapped` has a vectorised `compute_reward(achieved_goal, desired_goal, info)`
(custom tasks also `compute_terminated`). User mistakes raise `EnvError` with a one-line message.
`record_gif(spec, act, path)` saves one episode of a policy as a GIF (the scripts' --capture-video).
`ThreadedVectorEnv(env_fns, threads)` is gymnasium's SyncVectorEnv with the MuJoCo physics of its envs on several
cores (her_ddpg's --env-threads), the same results bit for bit.
"""

import ast
import contextlib
import dataclasses
import difflib
import io
import os

import gymnasium as gym
import numpy as np

from envs.wrappers import DiscretizeAction, SuccessInfo, ThreadedVectorEnv


class EnvError(ValueError):
    """A user mistake in an env name or its arguments; the message is one line, fit to print as is."""


# registered id -> (entry point, default horizon T)
REGISTERED = {
    "ContinuousSeek-v0": ("envs.seek:ContinuousSeek", 10),
    "DriveSeek-v0": ("envs.seek:DriveSeek", 40),
    "NoisySeek-v0": ("envs.seek:NoisySeek", 40),
    "BitFlip-v0": ("envs.bitflip:BitFlip", 10),
    "Point2D-v0": ("envs.point:Point2D", 100),
    "FourRooms-v0": ("envs.point:FourRooms", 50),
    "Navigation-v0": ("envs.point:Navigation", 50),
    "Maze-v0": ("envs.maze:Maze", 32),
    "GoalReacher-v0": ("envs.reacher:GoalReacher", 100),
}
for _id, (_entry, _T) in REGISTERED.items():
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=_entry, max_episode_steps=_T)

# short name -> (registered id, fixed constructor arguments)
TASKS = {
    "ContinuousSeek": ("ContinuousSeek-v0", {}),
    "DriveSeek": ("DriveSeek-v0", {}),
    "NoisySeek": ("NoisySeek-v0", {}),
    "BitFlip": ("BitFlip-v0", {}),
    "Point2D": ("Point2D-v0", {"walls": "open"}),
    "Point2DFourRoom": ("Point2D-v0", {"walls": "four_room"}),
    "FourRooms": ("FourRooms-v0", {}),
    "EmptyMaze": ("Maze-v0", {"layout": "empty"}),
    "FourRoomMaze": ("Maze-v0", {"layout": "four_room"}),
    "Navigation": ("Navigation-v0", {}),
    "GoalReacher": ("GoalReacher-v0", {}),
}
ROBOTICS = {"FetchReach": "FetchReach-v4", "FetchPush": "FetchPush-v4", "FetchPickAndPlace": "FetchPickAndPlace-v4",
            "FetchSlide": "FetchSlide-v4", "HandReach": "HandReach-v3"}


def names():
    """The short names `make` knows (any full Gymnasium id works too)."""
    return sorted(TASKS) + sorted(ROBOTICS)


def _register_robotics():
    # gymnasium-robotics 1.4.2 prints a notice about Adroit reward versions to stderr on import; none of ours use it
    with contextlib.redirect_stderr(io.StringIO()):
        import gymnasium_robotics

        gym.register_envs(gymnasium_robotics)


def parse(spec):
    """'ContinuousSeek:d=10,size=5' -> ('ContinuousSeek', {'d': 10, 'size': 5})."""
    name, _, rest = spec.partition(":")
    kwargs = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise EnvError(f"cannot read env argument {item!r} in {spec!r}; write Name:key=value,key=value")
        try:
            kwargs[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            kwargs[key.strip()] = value.strip()
    return name.strip(), kwargs


def make(spec, discrete=None, factorised=False, **kwargs):
    """Make the goal env named by `spec` (short name, 'Name:key=value', or a Gymnasium id).

    discrete: wrap a Box action space into `discrete` bins per dimension (joint Discrete, or MultiDiscrete when
    `factorised`); on FetchReach the blocked gripper dimension is left out. Other keyword arguments go to the env
    constructor (or to gym.make, such as max_episode_steps or render_mode).
    """
    name, parsed = parse(spec)
    kwargs = {**parsed, **kwargs}
    ignore_dims = ()
    if name in TASKS or name in REGISTERED:
        env_id, fixed = TASKS.get(name, (name, {}))
        kwargs = {**fixed, **kwargs}
        if env_id == "BitFlip-v0":
            kwargs.setdefault("max_episode_steps", int(kwargs.get("n", 10)))  # T = n bits
        try:
            env = gym.make(env_id, **kwargs)
        except (TypeError, ValueError) as e:
            raise EnvError(f"{name}: {str(e).splitlines()[0]}") from None
    else:
        env_id = ROBOTICS.get(name, name)
        if env_id not in gym.registry:
            _register_robotics()
        if env_id not in gym.registry:
            close = difflib.get_close_matches(name, names() + list(gym.registry), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; known short names: {', '.join(names())}"
            raise EnvError(f"unknown env {name!r}{hint}")
        spec = gym.spec(env_id)
        if isinstance(spec.entry_point, str) and spec.entry_point.startswith("gymnasium_robotics.envs.fetch."):
            from envs.fetch import FASTER  # the same observations, computed from addresses looked up once

            spec = dataclasses.replace(spec, entry_point=FASTER.get(spec.entry_point, spec.entry_point))
        try:
            env = SuccessInfo(gym.make(spec, **kwargs))
        except Exception as e:  # a missing dependency or bad argument inside a third-party env: one line
            raise EnvError(f"{env_id}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
        if name == "FetchReach" or env_id.startswith("FetchReach"):
            ignore_dims = (3,)  # the gripper is blocked in Reach
    space = env.observation_space
    if not isinstance(space, gym.spaces.Dict) or not {"achieved_goal", "desired_goal"} <= set(space.spaces):
        env.close()
        raise EnvError(f"{spec!r} is not goal-conditioned: its observation has no achieved_goal/desired_goal")
    if discrete is not None:
        try:
            env = DiscretizeAction(env, bins=discrete, factorised=factorised, ignore_dims=ignore_dims)
        except ValueError as e:
            raise EnvError(f"{spec!r}: {e}") from None
    return env


def horizon(env):
    """Episode length T of an env made by `make` (its TimeLimit)."""
    return env.spec.max_episode_steps


def sparse_rewards(env):
    """(r_fail, r_success) of a goal env with a sparse reward: (-1, 0) or (0, 1).

    Probed through the env's own vectorised `compute_reward`: the achieved goal against itself (success), against the
    desired goal and against displaced copies of itself. Any other value means a dense or unknown reward, which
    raises EnvError, so a script can refuse it in one line instead of clipping every target flat.
    """
    u = env.unwrapped
    ob, _ = env.reset(seed=0)
    if isinstance(ob["achieved_goal"], dict):  # FrankaKitchen: one goal per task, as a dict
        raise EnvError(f"{env.spec.id} has dict goals (one per task); these scripts need one goal vector")
    ag, g = np.asarray(ob["achieved_goal"], np.float64), np.asarray(ob["desired_goal"], np.float64)
    if ag.shape != g.shape:
        raise EnvError(f"{env.spec.id}: achieved goal {ag.shape} and desired goal {g.shape} differ in shape")
    direction = np.random.default_rng(0).standard_normal(ag.shape)
    goals = np.stack([ag, g] + [ag + scale * direction for scale in (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0)])
    r = np.asarray(u.compute_reward(np.broadcast_to(ag, goals.shape), goals, {}), np.float64).reshape(-1)
    r_success = float(r[0])
    conventions = {0.0: (-1.0, 0.0), 1.0: (0.0, 1.0)}
    if r_success not in conventions or not np.isin(r, conventions[r_success]).all():
        seen = ", ".join(f"{v:.3g}" for v in np.unique(r)[:4])
        raise EnvError(f"{env.spec.id} has a dense or unknown reward (values {seen}); this script needs a sparse "
                       "one: -1 until the goal is reached and 0 there, or 0 and 1")
    return conventions[r_success]


def record_gif(spec, act, path, seed=0):
    """Run one episode of `spec` with the policy `act(observation dict) -> action` and save it as a GIF at `path`.

    Headless machines render through EGL. An env that cannot render here prints why and writes nothing; returns
    whether the GIF was written.
    """
    if "DISPLAY" not in os.environ:
        os.environ.setdefault("MUJOCO_GL", "egl")  # read when the first MuJoCo renderer is made
    import imageio  # installed with gymnasium-robotics

    try:
        env = make(spec, render_mode="rgb_array")
        ob, _ = env.reset(seed=seed)
        frames = [env.render()]
    except Exception as e:  # no rgb_array rendering for this env, or no OpenGL on this machine
        reason = str(e).splitlines()[0][:120] if str(e) else ""
        print(f"no video: {spec} cannot render here ({type(e).__name__}: {reason})")
        return False
    done = False
    while not done:
        ob, _, terminated, truncated, _ = env.step(act(ob))
        frames.append(env.render())
        done = terminated or truncated
    env.close()
    imageio.mimsave(path, frames, duration=40)
    print(f"video: {path}")
    return True
