"""Wrappers the resolver applies: a discrete-action adapter for Box envs and one success key for every env."""

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class DiscretizeAction(gym.ActionWrapper):
    """k bins per action dimension, as a joint Discrete(k^n) or a factorised MultiDiscrete([k] * n).

    HDM and HTRPO run discrete versions of continuous tasks this way (GCSL's DiscretizedActionEnv: 3 bins -> {-1, 0,
    1} per dimension). `ignore_dims` are held at the middle of their range (FetchReach's blocked gripper), so
    FetchReach becomes {-1, 0, 1}^3 = 27 joint actions.
    """

    def __init__(self, env, bins=3, factorised=False, ignore_dims=()):
        super().__init__(env)
        box = env.action_space
        if not isinstance(box, spaces.Box) or int(bins) < 2:
            raise ValueError(f"discretising needs a Box action space and bins >= 2, got {box} and bins={bins}")
        self.bins, self.factorised = int(bins), bool(factorised)
        self.active = np.array([i for i in range(box.shape[0]) if i not in set(ignore_dims)])
        self.levels = np.linspace(box.low[self.active], box.high[self.active], self.bins).T  # [n_active, bins]
        self.base = ((box.low + box.high) / 2).astype(box.dtype)
        n = len(self.active)
        if self.factorised:
            self.action_space = spaces.MultiDiscrete([self.bins] * n)
        else:
            if self.bins**n > 100_000:
                raise ValueError(f"{self.bins}^{n} joint actions is too many; pass factorised=True")
            self.action_space = spaces.Discrete(self.bins**n)
            digits = np.stack(np.unravel_index(np.arange(self.bins**n), [self.bins] * n), 1)
            self.table = np.broadcast_to(self.base, (self.bins**n, box.shape[0])).copy()
            self.table[:, self.active] = self.levels[np.arange(n), digits]  # row i = the continuous action of index i

    def action(self, action):
        if not self.factorised:
            return self.table[int(action)]
        a = self.base.copy()
        a[self.active] = self.levels[np.arange(len(self.active)), np.asarray(action, int)]
        return a


class SuccessInfo(gym.Wrapper):
    """Make `info["is_success"]` exist whatever the underlying env calls it (PointMaze and friends say "success")."""

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        info.setdefault("is_success", bool(info.get("success", False)))
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info.setdefault("is_success", bool(info.get("success", False)))
        return obs, reward, terminated, truncated, info
