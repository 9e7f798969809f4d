"""Grid mazes with 4 moves, from the HPG/HTRPO code (paulorauber/hpg and the HTRPO authors' code).

The agent moves up/down/left/right on a grid; moves into walls or off the grid are ignored; with probability `slip`
a uniformly random move is taken instead. Reward -1 until the goal cell, then 0, which ends the episode; 32 steps.
EmptyMaze(h, w): an open grid entered at (0, 0). FourRoomMaze: the 11x11 four-rooms layout, entered at a random
corner, with slip 0.2. Goals are uniform over free cells that are not entries. Positions are (row, col) floats.
"""

import numpy as np
from gymnasium import spaces

from envs.base import GoalEnv, goal_spaces

MOVES = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]])  # up, down, left, right


def four_room_walls():
    """11x11: wall column 5 (doors at rows 2, 9), row 5 on cols 0-4 (door col 1), row 6 on cols 6-10 (door col 8)."""
    walls = np.zeros((11, 11), bool)
    walls[:, 5] = True
    walls[5, :5] = True
    walls[6, 6:] = True
    for door in [(5, 1), (2, 5), (6, 8), (9, 5)]:
        walls[door] = False
    return walls


class Maze(GoalEnv):
    terminate_on_success = True

    def __init__(self, layout="four_room", height=11, width=11, slip=None):
        if layout == "four_room":
            self.walls = four_room_walls()
            self.entries = np.array([[0, 0], [0, 10], [10, 0], [10, 10]])
            self.slip = 0.2 if slip is None else float(slip)
        elif layout == "empty":
            if int(height) < 2 or int(width) < 2:
                raise ValueError(f"EmptyMaze needs height, width >= 2, got {height}x{width}")
            self.walls = np.zeros((int(height), int(width)), bool)
            self.entries = np.array([[0, 0]])
            self.slip = 0.0 if slip is None else float(slip)
        else:
            raise ValueError(f"Maze layout must be 'four_room' or 'empty', got {layout!r}")
        free = np.argwhere(~self.walls)
        is_entry = (free[:, None, :] == self.entries[None]).all(-1).any(-1)
        self.goal_cells = free[~is_entry]
        high = np.array(self.walls.shape, np.float32) - 1
        self.observation_space = goal_spaces(np.zeros(2), high, np.zeros(2), high)
        self.action_space = spaces.Discrete(4)

    def _reset(self):
        self.pos = self.entries[self.np_random.integers(len(self.entries))].copy()
        self.g = self.goal_cells[self.np_random.integers(len(self.goal_cells))]

    def _step(self, action):
        if self.slip > 0 and self.np_random.random() < self.slip:
            action = self.np_random.integers(4)
        new = self.pos + MOVES[int(action)]
        if (new >= 0).all() and (new < self.walls.shape).all() and not self.walls[new[0], new[1]]:
            self.pos = new

    def _obs(self):
        pos = self.pos.astype(np.float32)
        return {"observation": pos, "achieved_goal": pos.copy(), "desired_goal": self.g.astype(np.float32)}

    def compute_reward(self, achieved_goal, desired_goal, info=None):
        return -(np.asarray(achieved_goal) != desired_goal).any(-1).astype(np.float32)
