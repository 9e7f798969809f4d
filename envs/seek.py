"""The ReenGAGE toy tasks (Levine & Feizi 2023), rebuilt from the paper (Sec. 6 and appendix) and alevine0/ReenGAGE (continuous_seek.py, drive_seek.py, noisy_seek.py).

ContinuousSeek(d): one goal in [-5, 5]^d, L-inf tolerance 0.1, 10 steps, reward -1/0, success = ever reached.
DriveSeek / NoisySeek: up to 200 goal cells at once, given as 200 (gate, x, y) slots; reward 1 on any active goal
cell (goals are not consumed), 40 steps, metric = average episode reward, success = ever rewarded.
"""

import numpy as np
from gymnasium import spaces

from envs.base import GoalEnv, goal_spaces


class ContinuousSeek(GoalEnv):
    """s in [-5,5]^d starts at 0; a in [-1,1]^d; s <- clip(s + clip(a), -5, 5); r = -1[|s - g|_inf > 0.1]."""

    sticky_success = True

    def __init__(self, d=5, size=5.0, eps=0.1):
        if int(d) < 1:
            raise ValueError(f"ContinuousSeek needs d >= 1, got {d}")
        self.d, self.size, self.eps = int(d), float(size), float(eps)
        box = np.full(self.d, self.size)
        self.observation_space = goal_spaces(-box, box, -box, box)
        self.action_space = spaces.Box(-1.0, 1.0, (self.d,), np.float32)

    def _reset(self):
        self.s = np.zeros(self.d)
        self.g = self.np_random.uniform(-self.size, self.size, self.d)

    def _step(self, action):
        self.s = np.clip(self.s + np.clip(action, -1.0, 1.0), -self.size, self.size)

    def _obs(self):
        s = self.s.astype(np.float32)
        return {"observation": s, "achieved_goal": s.copy(), "desired_goal": self.g.astype(np.float32)}

    def compute_reward(self, achieved_goal, desired_goal, info=None):
        # the boundary (= eps) counts as success, as in the paper's code
        return -(np.abs(np.asarray(desired_goal) - achieved_goal).max(-1) > self.eps).astype(np.float32)


class _GoalSetEnv(GoalEnv):
    """Shared by DriveSeek and NoisySeek: 200 (gate, x, y) goal slots, reward 1 on an active goal cell."""

    sticky_success = True
    success_reward = 1.0
    n_max = 200

    def _set_goals(self, cells):
        """cells [n, 2] of distinct integer (x, y); sort by y then x (np.lexsort) and pad with (0, 0, 0) rows."""
        cells = cells[np.lexsort((cells[:, 0], cells[:, 1]))]
        self.G = np.zeros((self.n_max, 3), np.float32)
        self.G[: len(cells), 0] = 1.0
        self.G[: len(cells), 1:] = cells

    def compute_reward_per_goal(self, achieved_goal, desired_goal, info=None):
        """R_item: [..., 200] indicator that the achieved cell equals active goal slot i (Multi-ReenGAGE's target)."""
        G = np.asarray(desired_goal).reshape(*np.shape(desired_goal)[:-1], self.n_max, 3)
        ag = np.asarray(achieved_goal)[..., None, :]
        return ((G[..., 0] == 1) & (G[..., 1:] == ag).all(-1)).astype(np.float32)

    def compute_reward(self, achieved_goal, desired_goal, info=None):
        return self.compute_reward_per_goal(achieved_goal, desired_goal).max(-1)


class DriveSeek(_GoalSetEnv):
    """A car on a 21x21 torus: theta += 0.5 a, pos += (cos, sin) theta, wrap to [-10.5, 10.5); goals on cells."""

    def __init__(self, size=10):
        self.size = int(size)
        self.n_cells = (2 * self.size + 1) ** 2
        half = self.size + 0.5
        slot_low = np.tile([0.0, -self.size, -self.size], self.n_max)
        slot_high = np.tile([1.0, self.size, self.size], self.n_max)
        g_space = spaces.Box(slot_low.astype(np.float32), slot_high.astype(np.float32), dtype=np.float32)
        self.observation_space = goal_spaces([-half, -half, -1, -1], [half, half, 1, 1],
                                             [-self.size] * 2, [self.size] * 2, dg_desired=g_space)
        # the env does not clip (the agent does), as in the paper's code
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)

    def _reset(self):
        self.pos, self.theta = np.zeros(2), 0.0
        n = self.np_random.integers(1, self.n_max + 1)
        idx = self.np_random.choice(self.n_cells, n, replace=False)
        width = 2 * self.size + 1
        self._set_goals(np.stack([idx % width, idx // width], 1) - self.size)

    def _step(self, action):
        self.theta += 0.5 * float(np.asarray(action).reshape(-1)[0])  # angle first, then move
        self.pos = self.pos + (np.cos(self.theta), np.sin(self.theta))
        half, width = self.size + 0.5, 2 * self.size + 1
        self.pos = (self.pos + half) % width - half  # torus wrap

    def _obs(self):
        obs = np.array([*self.pos, np.cos(self.theta), np.sin(self.theta)], np.float32)
        return {"observation": obs, "achieved_goal": np.rint(self.pos).astype(np.float32),
                "desired_goal": self.G.reshape(-1).copy()}


class NoisySeek(_GoalSetEnv):
    """An unbounded plane: pos += a (projected to the unit disc) + N(0, I); goals in Gaussian clusters."""

    def __init__(self, center_sigma=10.0, cluster_sigma=2.0, noise_sigma=1.0, clusters_param=0.15):
        self.center_sigma, self.cluster_sigma = float(center_sigma), float(cluster_sigma)
        self.noise_sigma, self.clusters_param = float(noise_sigma), float(clusters_param)
        slot_low = np.tile([0.0, -np.inf, -np.inf], self.n_max).astype(np.float32)
        slot_high = np.tile([1.0, np.inf, np.inf], self.n_max).astype(np.float32)
        g_space = spaces.Box(slot_low, slot_high, dtype=np.float32)
        self.observation_space = goal_spaces([-np.inf] * 2, [np.inf] * 2, [-np.inf] * 2, [np.inf] * 2,
                                             dg_desired=g_space)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)

    def _reset(self):
        rng = self.np_random
        self.pos = np.zeros(2)
        n = rng.integers(1, self.n_max + 1)
        n_clusters = rng.geometric(self.clusters_param)
        sizes = rng.multinomial(n, rng.dirichlet(np.ones(n_clusters)))
        centers = rng.normal(0.0, self.center_sigma, (n_clusters, 2))
        goals = np.rint(np.repeat(centers, sizes, 0) + rng.normal(0.0, self.cluster_sigma, (n, 2)))
        self._set_goals(np.unique(goals, axis=0))

    def _step(self, action):
        a = np.asarray(action, np.float64).reshape(2)
        norm = np.sqrt(a @ a)
        if norm > 1.0:  # project onto the unit disc
            a = a / norm
        self.pos = self.pos + a + self.np_random.normal(0.0, self.noise_sigma, 2)

    def _obs(self):
        return {"observation": self.pos.astype(np.float32), "achieved_goal": np.rint(self.pos).astype(np.float32),
                "desired_goal": self.G.reshape(-1).copy()}
