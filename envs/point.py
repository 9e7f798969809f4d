"""Continuous point tasks: MHER's Point2D rooms, HDM's FourRooms point mass and hEM's K-dim navigation.

Point2D / Point2DFourRoom (MHER paper, Sec. 5): p in [-B, B]^2, p <- p + clip(a, -1, 1), walls
resolved as the multiworld code does, reward -1[|p - g| > 1], 100 steps, never ends early. B = 5 (the paper).
FourRooms (HDM paper, Sec. 6; GCSL's env): a numpy rebuild of GCSL's MuJoCo point mass, p <- clip(p + 0.05 a, +-0.55) then pushed
out of the capsule walls, success |p - g| < 0.08 at step 50; goals="free" (1777 collision-free cells) or "full" (all
2500 cells of GCSL's grid, as GCSL samples them).
Navigation(K) (hEM paper, Sec. 5): s in [-1, 1]^K, s <- clip(s + 0.2 clip(u), -1, 1), success |s - g| < 0.1 ends it;
reward="-10" (-1 until success, 0 there) or "01" (the paper's r = 1[success]).
"""

import math

import numpy as np
from gymnasium import spaces

from envs.base import GoalEnv, distance, goal_spaces


def four_room_rects(B, pad=0.8):
    """MHER's six walls (a central cross plus four border stubs) as inflated rectangles (min_x, max_x, min_y, max_y)."""
    spans = [(-1.2 * B, -1.05 * B), (-0.17 * B, 0.17 * B), (1.05 * B, 1.2 * B)]
    horizontal = [(lo - pad, hi + pad, -pad, pad) for lo, hi in spans]  # at y = 0
    vertical = [(-pad, pad, lo - pad, hi + pad) for lo, hi in reversed(spans)]  # at x = 0
    return horizontal + vertical


def _overlaps(x0, y0, x1, y1, p, q):
    """Axis-aligned bounding-box overlap of the edge (x0,y0)-(x1,y1) and the move p->q (multiworld's test)."""
    left, right = max(min(x0, x1), min(p[0], q[0])), min(max(x0, x1), max(p[0], q[0]))
    bottom, top = max(min(y0, y1), min(p[1], q[1])), min(max(y0, y1), max(p[1], q[1]))
    return bottom <= top and left <= right


def handle_collision(rect, p, q, eps=0.01):
    """Stop the move p->q just outside whichever face of `rect` it crosses. p, q are [x, y] lists; q is changed."""
    min_x, max_x, min_y, max_y = rect
    seg = tuple(q)  # the move as it was when this wall was reached
    if _overlaps(min_x, max_y, max_x, max_y, p, seg) and q[1] <= p[1] >= max_y:
        q[1] = max_y + eps
    if _overlaps(min_x, min_y, max_x, min_y, p, seg) and q[1] >= p[1] <= min_y:
        q[1] = min_y - eps
    if _overlaps(max_x, min_y, max_x, max_y, p, seg) and q[0] <= p[0] >= max_x:
        q[0] = max_x + eps
    if _overlaps(min_x, min_y, min_x, max_y, p, seg) and q[0] >= p[0] <= min_x:
        q[0] = min_x - eps
    return q


class Point2D(GoalEnv):
    def __init__(self, walls="open", boundary=5.0, target_radius=1.0):
        if walls not in ("open", "four_room"):
            raise ValueError(f"Point2D walls must be 'open' or 'four_room', got {walls!r}")
        self.B, self.target_radius = float(boundary), float(target_radius)
        self.rects = [] if walls == "open" else four_room_rects(self.B)
        box = np.full(2, self.B)
        self.observation_space = goal_spaces(-box, box, -box, box)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)

    def _free_point(self):
        while True:
            p = self.np_random.uniform(-self.B, self.B, 2)
            if not any(r[0] < p[0] < r[1] and r[2] < p[1] < r[3] for r in self.rects):
                return p

    def _reset(self):
        self.g = self._free_point()
        self.p = self._free_point()

    def _step(self, action):
        q0 = (self.p + np.clip(action, -1.0, 1.0)).tolist()
        if self.rects:  # plain floats: this runs per wall per step
            p, q = self.p.tolist(), list(q0)
            for rect in self.rects:
                q = handle_collision(rect, p, q)
            if q[0] != q0[0] and q[1] != q0[1]:  # caught on two walls: redo in reverse order (the official rule)
                q = list(q0)
                for rect in reversed(self.rects):
                    q = handle_collision(rect, p, q)
            q0 = q
        self.p = np.clip(q0, -self.B, self.B)

    def _obs(self):
        p = self.p.astype(np.float32)
        return {"observation": p, "achieved_goal": p.copy(), "desired_goal": self.g.astype(np.float32)}

    def compute_reward(self, achieved_goal, desired_goal, info=None):
        return -(distance(achieved_goal, desired_goal) > self.target_radius).astype(np.float32)


# GCSL four rooms: capsule walls of radius 0.03 along y = 0 and x = 0, leaving four doorways of width 0.2
_SPANS = [(-0.6, -0.4), (-0.2, 0.2), (0.4, 0.6)]
ROOM_SEGMENTS = [(a, 0.0, b, 0.0) for a, b in _SPANS] + [(0.0, a, 0.0, b) for a, b in _SPANS]


def _closest_on_segment(px, py, seg):
    ax, ay, bx, by = seg
    dx, dy = bx - ax, by - ay
    t = min(max(((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy), 0.0), 1.0)
    return ax + t * dx, ay + t * dy


def wall_distance(points):
    """Distance of each point [N, 2] to the nearest wall segment (used to pick collision-free goal cells)."""
    d = np.full(len(points), np.inf)
    for ax, ay, bx, by in ROOM_SEGMENTS:
        ab = np.array([bx - ax, by - ay])
        t = np.clip(((points - [ax, ay]) @ ab) / (ab @ ab), 0, 1)
        d = np.minimum(d, np.linalg.norm(points - ([ax, ay] + t[:, None] * ab), axis=1))
    return d


class FourRooms(GoalEnv):
    contact = 0.08  # ball radius 0.05 + wall radius 0.03

    def __init__(self, threshold=0.08, goals="free"):
        if goals not in ("free", "full"):
            raise ValueError(f"FourRooms goals must be 'free' or 'full', got {goals!r}")
        self.threshold = float(threshold)
        grid = np.linspace(-0.56, 0.56, 50)
        cells = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
        # free: the cells of GCSL's grid that the ball's centre can occupy (|p| <= 0.55), 1777 of 2500; full: all
        # 2500, as GCSL samples them, including cells inside walls, reachable only to within the threshold
        reachable = (wall_distance(cells) >= self.contact) & (np.abs(cells).max(1) <= 0.55)
        self.goal_cells = cells[reachable] if goals == "free" else cells
        self.observation_space = goal_spaces([-0.6] * 2, [0.6] * 2, [-0.6] * 2, [0.6] * 2)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)

    def _reset(self):
        self.p = self.np_random.uniform(-0.33, -0.27, 2)
        self.g = self.goal_cells[self.np_random.integers(len(self.goal_cells))]

    def _step(self, action):
        a = np.clip(action, -1.0, 1.0)
        px = min(max(self.p[0] + 0.05 * float(a[0]), -0.55), 0.55)
        py = min(max(self.p[1] + 0.05 * float(a[1]), -0.55), 0.55)
        for _ in range(2):  # contact: push the ball radially out of every wall it overlaps, two passes
            for seg in ROOM_SEGMENTS:
                cx, cy = _closest_on_segment(px, py, seg)
                dist = math.hypot(px - cx, py - cy)
                if 1e-12 < dist < self.contact:
                    px, py = cx + (px - cx) * self.contact / dist, cy + (py - cy) * self.contact / dist
        self.p = np.array([px, py])

    def _obs(self):
        p = self.p.astype(np.float32)
        return {"observation": p, "achieved_goal": p.copy(), "desired_goal": self.g.astype(np.float32)}

    def compute_reward(self, achieved_goal, desired_goal, info=None):
        return -(distance(achieved_goal, desired_goal) >= self.threshold).astype(np.float32)


class Navigation(GoalEnv):
    terminate_on_success = True

    def __init__(self, k=2, step_size=0.2, threshold=0.1, reward="-10"):
        if int(k) < 1:
            raise ValueError(f"Navigation needs k >= 1, got {k}")
        if str(reward) not in ("-10", "01"):  # a name string parses "-10" as the number -10, "01" stays text
            raise ValueError(f"Navigation reward must be '-10' or '01', got {reward!r}")
        self.k, self.step_size, self.threshold = int(k), float(step_size), float(threshold)
        self.success_reward = 1.0 if str(reward) == "01" else 0.0  # the reward of a success step (GoalEnv.step)
        box = np.ones(self.k)
        self.observation_space = goal_spaces(-box, box, -box, box)
        self.action_space = spaces.Box(-1.0, 1.0, (self.k,), np.float32)

    def _reset(self):
        self.s = self.np_random.uniform(-1.0, 1.0, self.k)
        self.g = self.np_random.uniform(-1.0, 1.0, self.k)

    def _step(self, action):
        self.s = np.clip(self.s + self.step_size * np.clip(action, -1.0, 1.0), -1.0, 1.0)

    def _obs(self):
        s = self.s.astype(np.float32)
        return {"observation": s, "achieved_goal": s.copy(), "desired_goal": self.g.astype(np.float32)}

    def compute_reward(self, achieved_goal, desired_goal, info=None):
        if self.success_reward == 1.0:  # reward="01"
            return (distance(achieved_goal, desired_goal) < self.threshold).astype(np.float32)
        return -(distance(achieved_goal, desired_goal) >= self.threshold).astype(np.float32)
