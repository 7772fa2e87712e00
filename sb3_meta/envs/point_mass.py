"""2D point mass that must reach a goal (Finn et al., 2017, Sec. 5.2; paper of this project, Sec. 4)."""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
import numpy as np

from sb3_meta.common.utils import check_int, check_positive_float
from sb3_meta.envs.core import Task, TaskEnv
from sb3_meta.envs.vec_env import BatchedTaskVecEnv, check_action, check_actions

__all__ = ["PointMassTask", "PointMassTasks", "PointMassVecEnv"]


@dataclasses.dataclass(frozen=True)
class PointMassTask(Task):
    """A point-mass task: where the episode starts and the goal to reach (both 2D)."""

    goal: tuple[float, float] = (0.0, 0.0)
    start: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("goal", "start"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or len(value) != 2:
                raise ValueError(f"PointMassTask.{name} must be 2 finite numbers (x, y), got {value!r}")


def goal_distance(positions: np.ndarray, goals: np.ndarray) -> np.ndarray:
    """Euclidean distance over the last axis, elementwise, so that one env and a batch give identical bits
    (``np.linalg.norm`` of a vector goes through BLAS ``dot``, of a batch through a sum)."""
    diff = positions - goals
    return np.sqrt(diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1])


class PointMassTasks(TaskEnv[PointMassTask]):
    """2D point mass: the observation is the position, the action a velocity command.

    Dynamics: ``position += action_scale * clip(action, -1, 1)`` (actions are exposed in [-1, 1]² and
    scaled, as in the original MAML code, so SB3's Gaussian policy does not saturate).
    Reward: ``-‖position - goal‖₂`` after the move. The episode terminates when that distance is below
    ``goal_radius`` and is truncated after ``max_episode_steps`` steps.
    Tasks: goal ~ U[-goal_range, goal_range]²; with ``start="random"`` the start is drawn from the same
    square (the task is start + goal, as the paper describes), with ``start="origin"`` every episode starts
    at (0, 0) (the original MAML code; needed to compare with MAML Fig. 5).

    :param start: ``"random"`` or ``"origin"``
    :param goal_range: half-width of the square that goals (and random starts) are drawn from (0.5)
    :param action_scale: largest move per axis and step (0.1)
    :param goal_radius: distance to the goal below which the episode terminates (0.01)
    :param max_episode_steps: horizon (100)
    :param seed: seed of the task RNG
    :param sample_task_on_reset: draw a new task at every reset (task mixture)
    :param render_mode: ``None`` or ``"rgb_array"``: :meth:`render` draws the plane (what SB3's ``make_vec_env``
        and ``VecVideoRecorder`` ask for)
    """

    task_type = PointMassTask
    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 10}
    #: side of the rendered image in pixels
    render_size = 128

    def __init__(
        self,
        start: str = "random",
        goal_range: float = 0.5,
        action_scale: float = 0.1,
        goal_radius: float = 0.01,
        max_episode_steps: int = 100,
        seed: int | None = None,
        sample_task_on_reset: bool = False,
        render_mode: str | None = None,
    ) -> None:
        if start not in ("random", "origin"):
            raise ValueError(f"start must be 'random' or 'origin', got {start!r}")
        check_positive_float("PointMassTasks: goal_range", goal_range)
        check_positive_float("PointMassTasks: action_scale", action_scale)
        if isinstance(goal_radius, bool) or not isinstance(goal_radius, (int, float, np.integer, np.floating)):
            raise ValueError(f"PointMassTasks: goal_radius must be a finite number >= 0, got {goal_radius!r}")
        if not np.isfinite(goal_radius) or goal_radius < 0:
            raise ValueError(f"PointMassTasks: goal_radius must be a finite number >= 0, got {goal_radius!r}")
        check_int("PointMassTasks: max_episode_steps", max_episode_steps)
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        super().__init__(seed=seed, sample_task_on_reset=sample_task_on_reset)
        self.start = start
        self.goal_range = float(goal_range)
        self.action_scale = float(action_scale)
        self.goal_radius = float(goal_radius)
        self.max_episode_steps = int(max_episode_steps)
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self._goal = np.zeros(2)
        self._start = np.zeros(2)
        self._position = np.zeros(2)
        self._elapsed = 0

    def _sample_task(self, rng: np.random.Generator) -> PointMassTask:
        goal = rng.uniform(-self.goal_range, self.goal_range, size=2)
        start = rng.uniform(-self.goal_range, self.goal_range, size=2) if self.start == "random" else np.zeros(2)
        return PointMassTask(goal=tuple(goal), start=tuple(start))

    def _apply_task(self, task: PointMassTask) -> None:
        self._goal = np.asarray(task.goal, dtype=np.float64)
        self._start = np.asarray(task.start, dtype=np.float64)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):  # type: ignore[override]
        super().reset(seed=seed, options=options)
        self._position = self._start.copy()
        self._elapsed = 0
        return self._position.astype(np.float32), {"task": self._task}

    def step(self, action):  # type: ignore[override]
        if self._task is None:
            raise RuntimeError("PointMassTasks: call reset() before step()")
        action = check_action(action, self.action_space)
        self._position = self._position + self.action_scale * np.clip(action, -1.0, 1.0)
        self._elapsed += 1
        distance = float(goal_distance(self._position, self._goal))
        terminated = distance < self.goal_radius
        truncated = self._elapsed >= self.max_episode_steps and not terminated
        return self._position.astype(np.float32), -distance, terminated, truncated, {"task": self._task, "distance": distance}

    def render(self) -> np.ndarray | None:  # type: ignore[override]
        """The plane ``[-2 goal_range, 2 goal_range]²`` as an RGB image (y up): the goal red (its disc at least
        ``goal_radius``), the start grey, the point blue (drawn at the border when outside the view)."""
        if self.render_mode is None:
            gym.logger.warn("PointMassTasks.render(): no render_mode; make the env with render_mode='rgb_array'")
            return None
        size, half = self.render_size, 2.0 * self.goal_range
        rows, cols = np.mgrid[0:size, 0:size]
        image = np.full((size, size, 3), 255, dtype=np.uint8)

        def disc(center: np.ndarray, radius: float, color: tuple[int, int, int]) -> None:
            x, y = np.clip(center, -half, half)
            col, row = (x + half) / (2 * half) * (size - 1), (half - y) / (2 * half) * (size - 1)
            radius_px = max(radius / (2 * half) * (size - 1), 2.0)
            image[(cols - col) ** 2 + (rows - row) ** 2 <= radius_px**2] = color

        disc(self._goal, self.goal_radius, (220, 40, 40))
        disc(self._start, 0.0, (150, 150, 150))
        disc(self._position, 0.0, (40, 70, 220))
        return image


class PointMassVecEnv(BatchedTaskVecEnv):
    """``n_envs`` point masses stepped as one numpy batch (no per-env Python loop in the dynamics).

    Transitions equal those of :class:`PointMassTasks` for the same task and actions. Finished sub-envs
    reset themselves (SB3 convention: ``infos[i]["terminal_observation"]``, ``"TimeLimit.truncated"``).
    """

    def __init__(self, env: PointMassTasks, n_envs: int) -> None:
        super().__init__(env, n_envs)
        self._goals = np.zeros((n_envs, 2))
        self._starts = np.zeros((n_envs, 2))
        self._positions = np.zeros((n_envs, 2))
        self._elapsed = np.zeros(n_envs, dtype=np.int64)
        self._actions = np.zeros((n_envs, 2))
        self._apply_tasks(np.arange(n_envs), self._tasks)

    def _apply_tasks(self, indices: np.ndarray, tasks: list[Task]) -> None:
        self._goals[indices] = np.array([t.goal for t in tasks], dtype=np.float64).reshape(-1, 2)  # type: ignore[attr-defined]
        self._starts[indices] = np.array([t.start for t in tasks], dtype=np.float64).reshape(-1, 2)  # type: ignore[attr-defined]

    def _reset_envs(self, indices: np.ndarray) -> None:
        self._positions[indices] = self._starts[indices]
        self._elapsed[indices] = 0

    def _observations(self) -> np.ndarray:
        return self._positions.astype(np.float32)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = check_actions(actions, self.action_space, self.num_envs)

    def step_wait(self):
        env: PointMassTasks = self.template_env  # type: ignore[assignment]
        self._positions += env.action_scale * np.clip(self._actions, -1.0, 1.0)
        self._elapsed += 1
        distances = goal_distance(self._positions, self._goals)
        terminated = distances < env.goal_radius
        truncated = (self._elapsed >= env.max_episode_steps) & ~terminated
        return self._finish_step(self._observations(), -distances, terminated, truncated, extra_info={"distance": distances})


PointMassTasks.batched_vec_env_cls = PointMassVecEnv
