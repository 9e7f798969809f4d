"""Bit flipping (Andrychowicz et al. 2017), as used by HER, hEM, HTRPO and the ReenGAGE appendix.

State and goal are n bits; action i flips bit i; reward -1 until s == g, then 0; n steps; the episode ends on
success (terminate_on_success, the hEM and HTRPO setting). `start="random"` draws s0 uniformly with g != s0 (HER, hEM,
the hEM paper, Sec. 5); `start="zeros"` starts from all zeros with a uniform goal (HTRPO, the HTRPO paper, Sec. 5).
"""

import numpy as np
from gymnasium import spaces

from envs.base import GoalEnv, goal_spaces


class BitFlip(GoalEnv):
    def __init__(self, n=10, start="random", terminate_on_success=True):
        if int(n) < 1 or start not in ("random", "zeros"):
            raise ValueError(f"BitFlip needs n >= 1 and start in ('random', 'zeros'), got n={n}, start={start!r}")
        self.n, self.start = int(n), start
        self.terminate_on_success = bool(terminate_on_success)
        self.observation_space = goal_spaces(np.zeros(self.n), np.ones(self.n), np.zeros(self.n), np.ones(self.n))
        self.action_space = spaces.Discrete(self.n)

    def _reset(self):
        rng = self.np_random
        self.s = np.zeros(self.n, np.float32)
        if self.start == "random":
            self.s = rng.integers(0, 2, self.n).astype(np.float32)
        self.g = rng.integers(0, 2, self.n).astype(np.float32)
        while self.start == "random" and np.array_equal(self.s, self.g):  # hEM: g != s0
            self.g = rng.integers(0, 2, self.n).astype(np.float32)

    def _step(self, action):
        self.s[int(action)] = 1.0 - self.s[int(action)]

    def _obs(self):
        return {"observation": self.s.copy(), "achieved_goal": self.s.copy(), "desired_goal": self.g.copy()}

    def compute_reward(self, achieved_goal, desired_goal, info=None):
        return -(np.asarray(achieved_goal) != desired_goal).any(-1).astype(np.float32)
