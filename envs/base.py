"""The goal-env contract every custom task follows, in one small base class.

A goal env returns Dict observations {observation, achieved_goal, desired_goal} and exposes vectorised
`compute_reward`, `compute_terminated` and `compute_truncated` (a batch of goals in, a batch out) that agree exactly
with what `step` returns, so hindsight relabeling can recompute them for any goal. `info["is_success"]` is always set.
Time limits are not handled here: registration wraps each task in Gymnasium's TimeLimit (see envs/__init__.py).
"""

import gymnasium as gym
import numpy as np
from gymnasium import spaces


def goal_spaces(obs_low, obs_high, goal_low, goal_high, dg_desired=None):
    """Dict observation space with float32 Boxes; `dg_desired` overrides the desired-goal size (DriveSeek)."""
    f = np.float32
    obs = spaces.Box(np.asarray(obs_low, f), np.asarray(obs_high, f), dtype=f)
    ag = spaces.Box(np.asarray(goal_low, f), np.asarray(goal_high, f), dtype=f)
    g = ag if dg_desired is None else dg_desired
    return spaces.Dict({"observation": obs, "achieved_goal": ag, "desired_goal": g})


def distance(achieved_goal, desired_goal):
    """Euclidean distance over the last axis, for a single goal or a batch."""
    return np.linalg.norm(np.asarray(achieved_goal) - desired_goal, axis=-1)


class GoalEnv(gym.Env):
    """Base for the custom tasks: subclasses implement `_reset`, `_step`, `compute_reward` and `_obs`.

    `terminate_on_success` says whether an episode ends when the goal is reached; `compute_terminated` then
    recomputes that for relabelled goals. `sticky_success` makes `is_success` mean "reached at any step so far"
    (the Seek tasks), otherwise it means "reached now" (read at the final step by evaluation).
    """

    metadata = {"render_modes": []}
    terminate_on_success = False
    sticky_success = False
    success_reward = 0.0  # the reward a success step pays: 0 in the -1/0 convention

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._success = False
        self._reset()
        return self._obs(), {"is_success": False}

    def step(self, action):
        self._step(action)
        obs = self._obs()
        reward = float(self.compute_reward(obs["achieved_goal"], obs["desired_goal"], None))
        reached = reward == self.success_reward
        self._success = (self._success or reached) if self.sticky_success else reached
        terminated = bool(self.terminate_on_success and reached)
        return obs, reward, terminated, False, {"is_success": self._success}

    def compute_terminated(self, achieved_goal, desired_goal, info=None):
        """Vectorised: True where the episode would end for this goal (only on tasks that end on success)."""
        reached = self.compute_reward(achieved_goal, desired_goal, info) == self.success_reward
        return reached & self.terminate_on_success

    def compute_truncated(self, achieved_goal, desired_goal, info=None):
        """Vectorised: truncation never depends on the goal here (the TimeLimit wrapper handles it)."""
        return np.zeros(np.shape(achieved_goal)[:-1], dtype=bool)
