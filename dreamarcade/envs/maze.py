"""Random mazes with a hidden goal: a fast task family for meta-RL (RL^2) work and tests.

A task is a maze (a random perfect maze over ``size x size`` cells, carved by depth-first search, with a few
extra walls knocked out so it has loops) plus a hidden goal cell. The agent starts in the top-left cell, moves
N/E/S/W (bumping into a wall leaves it in place), gets ``goal_reward`` on reaching the goal (which ends the
episode) and ``-step_penalty`` per step. It never sees the goal: in an RL^2 trial
(:class:`~dreamarcade.wrappers.metarl.EpisodeConcat`) it must find the goal in episode 1 and remember it.

Two observation forms:

* ``"vector"``: one-hot position (size*size) + the 4 wall bits of the current cell (N, E, S, W), float32;
* ``"pixels"``: an RGB top view ``(pixel_size, pixel_size, 3)`` uint8 of the walls and the agent (no goal).

Task-family interface: ``sample_task(rng)``, ``set_task(task)``, ``get_task()``. A set task stays until the next
``set_task``; without one, every ``reset`` draws a new task (what a memoryless agent trained on the family sees).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from dreamarcade.errors import check_count

# Direction k: (dy, dx); wall bit k of a cell is set when the way in that direction is blocked.
_MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))  # N, E, S, W
_OPPOSITE = (2, 3, 0, 1)


@dataclass(frozen=True, eq=False)
class MazeTask:
    """One maze layout and its hidden goal. ``walls[y, x, k]`` is True if direction k is blocked.

    Example (a 3x3 room with no inner walls, played through :class:`RandomMazeEnv`):
        >>> import numpy as np
        >>> from dreamarcade.envs.maze import MazeTask, RandomMazeEnv
        >>> walls = np.zeros((3, 3, 4), dtype=bool)
        >>> walls[0, :, 0] = walls[:, -1, 1] = walls[-1, :, 2] = walls[:, 0, 3] = True  # the outer walls (N, E, S, W)
        >>> task = MazeTask(walls, goal=(2, 2))
        >>> task.shortest_path_length(), task.shortest_path_length(start=(2, 0))
        (4, 2)
        >>> env = RandomMazeEnv(size=3)
        >>> env.set_task(task)
        >>> _, info = env.reset(seed=0)
        >>> for action in (1, 1, 2, 2):  # E, E, S, S
        ...     obs, reward, terminated, truncated, info = env.step(action)
        >>> info["reached_goal"], env.pos
        (True, (2, 2))
    """

    walls: np.ndarray  # (size, size, 4) bool
    goal: tuple[int, int]

    def __eq__(self, other: object) -> bool:  # the dataclass's own compared arrays as a tuple, and raised
        if not isinstance(other, MazeTask):
            return NotImplemented
        return tuple(self.goal) == tuple(other.goal) and np.array_equal(self.walls, other.walls)

    def __hash__(self) -> int:  # tasks go in sets and dicts ("was this maze drawn before?")
        return hash((np.asarray(self.walls, bool).tobytes(), np.asarray(self.walls).shape, tuple(self.goal)))

    def shortest_path_length(self, start: tuple[int, int] = (0, 0)) -> int:
        """Breadth-first distance from ``start`` to the goal (the best possible episode length)."""
        size = self.walls.shape[0]
        dist = {start: 0}
        frontier = [start]
        while frontier:
            nxt = []
            for y, x in frontier:
                if (y, x) == self.goal:
                    return dist[(y, x)]
                for k, (dy, dx) in enumerate(_MOVES):
                    ny, nx = y + dy, x + dx
                    if not self.walls[y, x, k] and 0 <= ny < size and 0 <= nx < size and (ny, nx) not in dist:
                        dist[(ny, nx)] = dist[(y, x)] + 1
                        nxt.append((ny, nx))
            frontier = nxt
        raise RuntimeError(f"the maze's goal {self.goal} cannot be reached from {start}: walls enclose it")


def generate_maze(size: int, rng: np.random.Generator, extra_openings: float = 0.15) -> np.ndarray:
    """A random perfect maze by iterative DFS, then a fraction ``extra_openings`` of the remaining walls removed."""
    walls = np.ones((size, size, 4), dtype=bool)
    visited = np.zeros((size, size), dtype=bool)
    stack = [(0, 0)]
    visited[0, 0] = True
    while stack:
        y, x = stack[-1]
        options = [
            k
            for k, (dy, dx) in enumerate(_MOVES)
            if 0 <= y + dy < size and 0 <= x + dx < size and not visited[y + dy, x + dx]
        ]
        if not options:
            stack.pop()
            continue
        k = options[int(rng.integers(len(options)))]
        ny, nx = y + _MOVES[k][0], x + _MOVES[k][1]
        walls[y, x, k] = walls[ny, nx, _OPPOSITE[k]] = False
        visited[ny, nx] = True
        stack.append((ny, nx))
    # Knock out some inner walls so there are loops (several routes): only E and S, each inner wall once.
    for y in range(size):
        for x in range(size):
            for k in (1, 2):
                ny, nx = y + _MOVES[k][0], x + _MOVES[k][1]
                if ny < size and nx < size and walls[y, x, k] and rng.random() < extra_openings:
                    walls[y, x, k] = walls[ny, nx, _OPPOSITE[k]] = False
    return walls


class RandomMazeEnv(gym.Env):
    """Random maze with a hidden goal (see the module docstring).

    Example:
        >>> env = RandomMazeEnv(size=4)
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape, int(env.action_space.n)
        ((20,), 4)
        >>> other = RandomMazeEnv(size=4)
        >>> _ = other.reset(seed=1)
        >>> env.get_task().goal, other.get_task().goal  # another seed, another maze
        ((3, 1), (1, 3))
        >>> other.set_task(env.get_task()); _ = other.reset()  # a set task stays through resets
        >>> other.get_task().goal
        (3, 1)
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        size: int = 4,
        obs_type: str = "vector",
        max_steps: int | None = None,
        goal_reward: float = 1.0,
        step_penalty: float = 0.01,
        extra_openings: float = 0.15,
        pixel_size: int = 84,
        render_mode: str | None = None,
    ) -> None:
        if not isinstance(size, (int, np.integer)) or size < 2:
            raise ValueError(f"size must be an integer >= 2, got {size!r}.")
        if obs_type not in ("vector", "pixels"):
            raise ValueError(f"obs_type must be 'vector' or 'pixels', got {obs_type!r}.")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}.")
        for name, value, hint in (
            ("max_steps", max_steps, ", or None for 4 * size**2"),
            ("pixel_size", pixel_size, ""),
        ):
            if value is not None:
                check_count(name, value, hint=hint)
        self.size, self.obs_type, self.render_mode = int(size), obs_type, render_mode
        self.max_steps = int(max_steps) if max_steps is not None else 4 * self.size * self.size
        self.goal_reward, self.step_penalty, self.extra_openings = goal_reward, step_penalty, extra_openings
        self.pixel_size = int(pixel_size)
        self.action_space = spaces.Discrete(4)
        if obs_type == "vector":
            self.observation_space = spaces.Box(0.0, 1.0, (self.size * self.size + 4,), np.float32)
        else:
            self.observation_space = spaces.Box(0, 255, (self.pixel_size, self.pixel_size, 3), np.uint8)
        self._task: MazeTask | None = None
        self._fixed = False
        self._task_pending = False
        self.pos = (0, 0)
        self.steps = 0

    # -- task family -------------------------------------------------------------------------------------------------
    def sample_task(self, rng: np.random.Generator) -> MazeTask:
        """A random maze and a random goal cell other than the start."""
        walls = generate_maze(self.size, rng, self.extra_openings)
        cell = int(rng.integers(1, self.size * self.size))
        return MazeTask(walls, (cell // self.size, cell % self.size))

    def set_task(self, task: MazeTask) -> None:
        """Fix the task until the next ``set_task`` (takes effect at the next ``reset``)."""
        if not isinstance(task, MazeTask) or np.shape(task.walls) != (self.size, self.size, 4):
            raise ValueError(
                f"task must be a MazeTask whose walls have shape ({self.size}, {self.size}, 4) (this env's maze), "
                f"got {task!r}."
            )
        goal = tuple(task.goal) if isinstance(task.goal, (tuple, list, np.ndarray)) else (task.goal,)
        if not (
            len(goal) == 2
            and all(isinstance(c, (int, np.integer)) and 0 <= c < self.size for c in goal)
            and goal != (0, 0)
        ):
            raise ValueError(
                f"the goal must be a (row, column) cell of the {self.size}x{self.size} maze other than the start "
                f"(0, 0), got {task.goal!r}."
            )
        # a list goal never equals a (row, column) position tuple; nested lists of walls have no .shape
        plain_goal = (int(goal[0]), int(goal[1]))
        if not (isinstance(task.walls, np.ndarray) and task.walls.dtype == bool and type(task.goal) is tuple):
            task = MazeTask(np.asarray(task.walls, dtype=bool), plain_goal)
        w = task.walls
        open_border = {
            "north": ~w[0, :, 0],
            "east": ~w[:, -1, 1],
            "south": ~w[-1, :, 2],
            "west": ~w[:, 0, 3],
        }
        gaps = [side for side, is_open in open_border.items() if is_open.any()]
        sides = f"{', '.join(gaps)} side{'s' if len(gaps) > 1 else ''}"
        if gaps:  # a move through it would leave the grid: the agent's position and observation would be garbage
            raise ValueError(
                f"the maze's outer wall is open on the {sides}: set walls[0, :, 0], walls[:, -1, 1], "
                "walls[-1, :, 2] and walls[:, 0, 3] to True (generate_maze does)."
            )
        # each inner wall is stored on both of its sides: one side alone made a one-way door (moves read the
        # current cell's side), and the pixel view draws only the east and south sides
        one_sided = [
            (y, x, k)
            for y in range(self.size)
            for x in range(self.size)
            for k in (1, 2)  # east, south: every inner wall once
            if 0 <= y + _MOVES[k][0] < self.size
            and 0 <= x + _MOVES[k][1] < self.size
            and w[y, x, k] != w[y + _MOVES[k][0], x + _MOVES[k][1], _OPPOSITE[k]]
        ]
        if one_sided:
            y, x, k = one_sided[0]
            ny, nx = y + _MOVES[k][0], x + _MOVES[k][1]
            raise ValueError(
                f"{len(one_sided)} inner wall(s) are set on one side only, e.g. walls[{y}, {x}, {k}] = "
                f"{bool(w[y, x, k])} but walls[{ny}, {nx}, {_OPPOSITE[k]}] = {bool(w[ny, nx, _OPPOSITE[k]])}: a wall "
                "between two cells must be set (or cleared) on both (generate_maze does)."
            )
        try:
            task.shortest_path_length()
        except RuntimeError as exc:
            raise ValueError(f"{exc}: open a path to it, or pick another goal.") from None
        self._task, self._fixed = task, True
        self._task_pending = True  # the new task starts at the next reset, never mid-episode

    def get_task(self) -> MazeTask:
        if self._task is None:
            raise RuntimeError("no task yet: call reset() or set_task() first.")
        return self._task

    # -- gym API -----------------------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if not self._fixed or self._task is None:
            self._task = self.sample_task(self.np_random)
        self.pos, self.steps = (0, 0), 0
        self._task_pending = False
        return self._obs(), {"shortest_path": self._task.shortest_path_length()}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._task is None:
            raise RuntimeError("call reset() before step().")
        if self._task_pending:
            raise RuntimeError("call reset() after set_task(): the new task starts at the next reset.")
        if not self.action_space.contains(action):
            raise ValueError(f"action must be an integer in [0, 4) (N, E, S, W), got {action!r}.")
        k = int(action)
        y, x = self.pos
        if not self._task.walls[y, x, k]:
            self.pos = (y + _MOVES[k][0], x + _MOVES[k][1])
        self.steps += 1
        terminated = self.pos == self._task.goal
        reward = (self.goal_reward if terminated else 0.0) - self.step_penalty
        truncated = not terminated and self.steps >= self.max_steps
        return self._obs(), float(reward), bool(terminated), bool(truncated), {"reached_goal": bool(terminated)}

    def _obs(self) -> np.ndarray:
        if self.obs_type == "pixels":
            return self._draw(show_goal=False)
        out = np.zeros(self.size * self.size + 4, np.float32)
        out[self.pos[0] * self.size + self.pos[1]] = 1.0
        out[self.size * self.size :] = self._task.walls[self.pos]  # type: ignore[union-attr]
        return out

    def _draw(self, show_goal: bool) -> np.ndarray:
        """Blocks of a (2*size+1)^2 grid: walls dark, floor light, agent red, goal green; scaled to pixel_size."""
        import cv2

        n = 2 * self.size + 1
        grid = np.zeros((n, n, 3), np.uint8)
        walls = self._task.walls  # type: ignore[union-attr]
        for y in range(self.size):
            for x in range(self.size):
                grid[2 * y + 1, 2 * x + 1] = 200
                if not walls[y, x, 1]:
                    grid[2 * y + 1, 2 * x + 2] = 200
                if not walls[y, x, 2]:
                    grid[2 * y + 2, 2 * x + 1] = 200
        if show_goal:
            gy, gx = self._task.goal  # type: ignore[union-attr]
            grid[2 * gy + 1, 2 * gx + 1] = (0, 200, 0)
        grid[2 * self.pos[0] + 1, 2 * self.pos[1] + 1] = (255, 0, 0)
        return cv2.resize(grid, (self.pixel_size, self.pixel_size), interpolation=cv2.INTER_NEAREST)

    def render(self) -> np.ndarray | None:
        """The top view with the goal shown (green): for videos, not for the agent."""
        if self.render_mode != "rgb_array" or self._task is None:
            return None
        return self._draw(show_goal=True)
