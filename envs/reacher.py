"""Goal-conditioned Reacher (MHER's ReacherGoalWrapper in the authors' code) on Gymnasium's Reacher-v5.

Reacher-v5's last two observation entries are fingertip - target (x, y); adding the target turns them into the
absolute fingertip position, which is the achieved goal. The target (drawn by Reacher: U(-0.2, 0.2)^2 with
|g| < 0.2) is the desired goal. Reward -1[|ag - g| > 0.02], success = within 0.02 now; 100 steps (MHER's limit).
The env's dense reward is discarded. v5 drops v2's z entry, so the observation is 10-dim (v2: 11).
"""

import gymnasium as gym
import numpy as np

from envs.base import GoalEnv, distance, goal_spaces


class GoalReacher(GoalEnv):
    def __init__(self, threshold=0.02):
        self.threshold = float(threshold)
        self.inner = gym.make("Reacher-v5").unwrapped  # the raw MuJoCo env: no TimeLimit, no checker
        self.observation_space = goal_spaces([-np.inf] * 10, [np.inf] * 10, [-np.inf] * 2, [np.inf] * 2)
        self.action_space = self.inner.action_space

    def reset(self, *, seed=None, options=None):
        self._raw, _ = self.inner.reset(seed=seed)
        return super().reset(seed=seed, options=options)

    def _reset(self):
        pass  # the inner env drew the start and the target

    def _step(self, action):
        self._raw = self.inner.step(np.clip(action, -1.0, 1.0))[0]

    def _obs(self):
        obs = self._raw.astype(np.float32)
        obs[-2:] += self.inner.goal  # fingertip - target -> absolute fingertip xy
        g = self.inner.goal.astype(np.float32)
        return {"observation": obs, "achieved_goal": obs[-2:].copy(), "desired_goal": g}

    def compute_reward(self, achieved_goal, desired_goal, info=None):
        return -(distance(achieved_goal, desired_goal) > self.threshold).astype(np.float32)

    def close(self):
        self.inner.close()
