"""Multi-armed bandits: a small task distribution with a Discrete action space (for tests and examples).

A task is the vector of arm means; an episode is ``horizon`` pulls. It has no batched VecEnv, so
``make_task_vec_env`` runs it through SB3's ``DummyVecEnv`` (the generic fallback of every task distribution).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
import numpy as np

from sb3_meta.common.utils import check_int
from sb3_meta.envs.core import Task, TaskEnv

__all__ = ["BanditTask", "BanditTasks"]


@dataclasses.dataclass(frozen=True)
class BanditTask(Task):
    """A bandit task: the mean reward of every arm."""

    means: tuple[float, ...] = (0.5,)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.means, tuple) or len(self.means) < 1:
            raise ValueError(f"BanditTask.means must be a non-empty tuple of numbers, got {self.means!r}")


class BanditTasks(TaskEnv[BanditTask]):
    """``n_arms``-armed bandit; every episode is ``horizon`` pulls of the same task.

    Observation: a constant ``[1.0]`` (the policy must learn from rewards alone, i.e. by adapting).
    Action: the arm to pull (``Discrete(n_arms)``). Reward: ``Bernoulli(means[a])`` (``reward="bernoulli"``)
    or ``Normal(means[a], noise_std)`` (``reward="gaussian"``), drawn from the env's ``np_random``.
    Tasks: arm means drawn i.i.d. from ``U[0, 1]``.

    :param n_arms: number of arms (5)
    :param horizon: pulls per episode (10); the episode is truncated after it
    :param reward: ``"bernoulli"`` or ``"gaussian"``
    :param noise_std: standard deviation of Gaussian rewards (0.1)
    :param seed: seed of the task RNG
    :param sample_task_on_reset: draw a new task at every reset (task mixture)
    """

    task_type = BanditTask
    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        n_arms: int = 5,
        horizon: int = 10,
        reward: str = "bernoulli",
        noise_std: float = 0.1,
        seed: int | None = None,
        sample_task_on_reset: bool = False,
    ) -> None:
        n_arms, horizon = check_int("n_arms", n_arms), check_int("horizon", horizon)
        if reward not in ("bernoulli", "gaussian"):
            raise ValueError(f"reward must be 'bernoulli' or 'gaussian', got {reward!r}")
        if not np.isfinite(noise_std) or noise_std < 0:
            raise ValueError(f"noise_std must be a finite number >= 0, got {noise_std!r}")
        super().__init__(seed=seed, sample_task_on_reset=sample_task_on_reset)
        self.n_arms = int(n_arms)
        self.horizon = self.max_episode_steps = int(horizon)
        self.reward = reward
        self.noise_std = float(noise_std)
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(self.n_arms)
        self._means = np.full(self.n_arms, 0.5)
        self._elapsed = 0

    def _sample_task(self, rng: np.random.Generator) -> BanditTask:
        return BanditTask(means=tuple(rng.uniform(0.0, 1.0, size=self.n_arms)))

    def validate_task(self, task: Any) -> BanditTask:
        task = super().validate_task(task)
        if len(task.means) != self.n_arms:
            raise ValueError(f"{type(self).__name__} has {self.n_arms} arms, got a task with {len(task.means)} means")
        if self.reward == "bernoulli" and not all(0.0 <= m <= 1.0 for m in task.means):
            raise ValueError(f"Bernoulli arm means must lie in [0, 1], got {task.means}")
        return task

    def _apply_task(self, task: BanditTask) -> None:
        self._means = np.asarray(task.means, dtype=np.float64)

    def _observation(self) -> np.ndarray:
        return np.ones(1, dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):  # type: ignore[override]
        super().reset(seed=seed, options=options)
        self._elapsed = 0
        return self._observation(), {"task": self._task}

    def step(self, action):  # type: ignore[override]
        if self._task is None:
            raise RuntimeError("BanditTasks: call reset() before step()")
        arm = np.asarray(action)
        integral = arm.size == 1 and (
            np.issubdtype(arm.dtype, np.integer)
            or (np.issubdtype(arm.dtype, np.floating) and float(arm.reshape(())).is_integer())
        )
        if not integral or not 0 <= int(arm.reshape(())) < self.n_arms:
            raise ValueError(f"Expected one integer arm in [0, {self.n_arms}), got {action!r}")
        arm = int(arm.reshape(()))
        mean = float(self._means[arm])
        if self.reward == "bernoulli":
            reward = float(self.np_random.random() < mean)
        else:
            reward = float(self.np_random.normal(mean, self.noise_std))
        self._elapsed += 1
        truncated = self._elapsed >= self.horizon
        return self._observation(), reward, False, truncated, {"task": self._task}
