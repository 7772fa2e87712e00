"""Vector envs whose sub-envs each hold a task, and ``make_task_vec_env`` that picks the fastest one.

A meta-iteration samples ``meta_batch_size`` tasks x ``fast_batch_size`` episodes as ONE batch: one
VecEnv with ``meta_batch_size * fast_batch_size`` sub-envs, sub-env ``i`` holding task ``i // fast_batch_size``.
Distributions with a batched implementation (``TaskEnv.batched_vec_env_cls``) step the whole batch at once
(numpy for the point mass, a native thread pool for MuJoCo); any other task distribution works through
SB3's ``DummyVecEnv`` / ``SubprocVecEnv`` with the same ``set_tasks`` / ``get_tasks`` API.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from sb3_meta.envs.core import Task, TaskEnv, as_task_list

__all__ = [
    "BatchedTaskVecEnv",
    "TaskDummyVecEnv",
    "TaskSubprocVecEnv",
    "check_actions",
    "get_task_env",
    "is_task_vec_env",
    "make_task_vec_env",
]


def check_actions(actions: Any, action_space: gym.Space, n_envs: int) -> np.ndarray:
    """Validate a batch of actions; raise ``ValueError`` on a wrong shape or a non-finite value."""
    actions = np.asarray(actions)
    if isinstance(action_space, gym.spaces.Box):
        expected = (n_envs, *action_space.shape)
        if actions.shape != expected:
            if n_envs == 1 and actions.shape == action_space.shape:
                actions = actions[None]
            else:
                raise ValueError(f"Expected actions of shape {expected}, got {actions.shape}")
        if not np.issubdtype(actions.dtype, np.number):
            raise ValueError(f"Expected numeric actions, got dtype {actions.dtype}")
        actions = actions.astype(np.float64)
        if not np.all(np.isfinite(actions)):
            raise ValueError("Actions must be finite; got NaN or inf (the state was left unchanged)")
        return actions
    if isinstance(action_space, gym.spaces.Discrete):
        actions = actions.reshape(-1) if actions.size == n_envs else actions
        if actions.shape != (n_envs,) or not np.issubdtype(actions.dtype, np.integer) and not np.all(actions == np.round(actions)):
            raise ValueError(f"Expected {n_envs} integer actions in [0, {action_space.n}), got {actions!r}")
        actions = actions.astype(np.int64)
        if np.any(actions < action_space.start) or np.any(actions >= action_space.start + action_space.n):
            raise ValueError(f"Discrete actions must lie in [{action_space.start}, {action_space.start + action_space.n})")
        return actions
    raise ValueError(f"Unsupported action space {action_space}")


def get_task_env(env: Any) -> TaskEnv:
    """The task distribution under ``env`` (a gymnasium env, possibly wrapped); clear error if it is none."""
    base = env.unwrapped if isinstance(env, gym.Env) else env
    missing = [m for m in ("sample_tasks", "reset_task", "get_task") if not callable(getattr(base, m, None))]
    if missing:
        raise ValueError(
            f"{type(base).__name__} is not a task distribution: it lacks {', '.join(missing)}. "
            "Use an env from sb3_meta.envs or subclass sb3_meta.envs.TaskEnv."
        )
    return base


class _TaskVecEnvMixin:
    """``set_tasks`` / ``get_tasks`` for SB3's own vector envs (the fallback for any task distribution)."""

    num_envs: int

    def _task_type(self) -> type[Task]:
        return self.get_attr("task_type", indices=[0])[0]  # type: ignore[attr-defined]

    def set_tasks(self, tasks: Sequence[Task], indices: VecEnvIndices = None) -> None:
        """Give sub-env ``indices[k]`` the task ``tasks[k]``; all tasks are validated before any is applied."""
        idx = self._get_indices(indices)  # type: ignore[attr-defined]
        tasks = as_task_list(tasks, self._task_type(), len(idx), f"{type(self).__name__}.set_tasks")
        for i, task in zip(idx, tasks):
            self.env_method("reset_task", task, indices=[i])  # type: ignore[attr-defined]

    def get_tasks(self, indices: VecEnvIndices = None) -> list[Task]:
        return self.env_method("get_task", indices=indices)  # type: ignore[attr-defined]

    def sample_task_batch(self, n: int) -> list[Task]:
        """Draw ``n`` tasks with the RNG of sub-env 0."""
        return self.env_method("sample_tasks", n, indices=[0])[0]  # type: ignore[attr-defined]


class TaskDummyVecEnv(_TaskVecEnvMixin, DummyVecEnv):
    """SB3 ``DummyVecEnv`` over task distributions, with ``set_tasks`` / ``get_tasks``."""


class TaskSubprocVecEnv(_TaskVecEnvMixin, SubprocVecEnv):
    """SB3 ``SubprocVecEnv`` over task distributions, with ``set_tasks`` / ``get_tasks``."""


class BatchedTaskVecEnv(VecEnv):
    """Base class of the batched task VecEnvs: ``n_envs`` copies of one task distribution stepped together.

    Subclasses hold the state of all sub-envs in arrays and implement ``_apply_tasks(indices, tasks)``,
    ``_reset_envs(indices)``, ``_observations()``, ``step_async`` and ``step_wait`` (ending with
    :meth:`_finish_step`, which does SB3's automatic reset). The task bookkeeping, per-sub-env task RNGs
    (for the task mixture), seeds, reset options and ``env_method("reset_task" | "get_task" | "sample_tasks")``
    are shared here.

    :param env: the task distribution (its constants and spaces are shared by all sub-envs)
    :param n_envs: number of sub-envs
    """

    def __init__(self, env: TaskEnv, n_envs: int) -> None:
        if isinstance(n_envs, bool) or not isinstance(n_envs, (int, np.integer)) or n_envs < 1:
            raise ValueError(f"n_envs must be an integer >= 1, got {n_envs!r}")
        self.template_env = env
        super().__init__(int(n_envs), env.observation_space, env.action_space)
        task = env._task if env._task is not None else env.sample_tasks(1)[0]
        self._tasks: list[Task] = [task] * self.num_envs
        self._task_rngs = [copy.deepcopy(env.task_rng) for _ in range(self.num_envs)]
        self.render_mode = None

    # --- subclass hooks --------------------------------------------------------------------------
    def _apply_tasks(self, indices: np.ndarray, tasks: list[Task]) -> None:
        raise NotImplementedError

    def _reset_envs(self, indices: np.ndarray) -> None:
        raise NotImplementedError

    def _observations(self) -> np.ndarray:
        raise NotImplementedError

    def _reset_rng(self, index: int, seed: int) -> None:
        """Reseed the initial-state RNG of one sub-env (override where initial states are random)."""

    # --- tasks ------------------------------------------------------------------------------------
    def set_tasks(self, tasks: Sequence[Task], indices: VecEnvIndices = None) -> None:
        """Give sub-env ``indices[k]`` the task ``tasks[k]``; all tasks are validated before any is applied."""
        idx = np.asarray(self._get_indices(indices), dtype=np.int64)
        tasks = as_task_list(tasks, self.template_env.task_type, len(idx), f"{type(self).__name__}.set_tasks")
        tasks = [self.template_env.validate_task(t) for t in tasks]
        self._apply_tasks(idx, tasks)
        for i, task in zip(idx.tolist(), tasks):
            self._tasks[i] = task

    def get_tasks(self, indices: VecEnvIndices = None) -> list[Task]:
        return [self._tasks[i] for i in self._get_indices(indices)]

    def sample_task_batch(self, n: int) -> list[Task]:
        """Draw ``n`` tasks with the task RNG of sub-env 0."""
        return self._sample_with(0, n)

    def _sample_with(self, index: int, n: int) -> list[Task]:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"sample_tasks: n must be an integer >= 1, got {n!r}")
        return [self.template_env._sample_task(self._task_rngs[index]) for _ in range(int(n))]

    # --- VecEnv API -------------------------------------------------------------------------------
    def reset(self) -> VecEnvObs:
        for i, seed in enumerate(self._seeds):
            if seed is not None:
                self._task_rngs[i] = TaskEnv._make_task_rng(seed)
                self._reset_rng(i, seed)
        for i, options in enumerate(self._options):
            options = dict(options or {})
            unknown = set(options) - {"task", "sample_task"}
            if unknown:
                raise ValueError(f"Unknown reset options {sorted(unknown)}; expected 'task' and/or 'sample_task'")
            if "task" in options:
                self.set_tasks([options["task"]], indices=[i])
            elif options.get("sample_task") or self.template_env.sample_task_on_reset:
                self.set_tasks(self._sample_with(i, 1), indices=[i])
        self._reset_seeds()
        self._reset_options()
        self._reset_envs(np.arange(self.num_envs))
        return self._observations()

    def _finish_step(
        self,
        obs: np.ndarray,
        rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        extra_info: dict[str, np.ndarray] | None = None,
    ) -> VecEnvStepReturn:
        """Build infos, then reset finished sub-envs in one batch (SB3's automatic reset)."""
        dones = terminated | truncated
        extra_info = extra_info or {}
        columns = {key: np.asarray(value).tolist() for key, value in extra_info.items()}
        infos: list[dict[str, Any]] = [{"task": task} for task in self._tasks]
        for key, values in columns.items():
            for info, value in zip(infos, values):
                info[key] = value
        done_idx = np.flatnonzero(dones)
        if done_idx.size:
            for i in done_idx.tolist():
                infos[i]["terminal_observation"] = obs[i].copy()
                infos[i]["TimeLimit.truncated"] = bool(truncated[i])
            if self.template_env.sample_task_on_reset:
                for i in done_idx.tolist():
                    self.set_tasks(self._sample_with(i, 1), indices=[i])
            self._reset_envs(done_idx)
            obs = self._observations()
        return obs, rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        pass

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        idx = self._get_indices(indices)
        if attr_name == "task":
            return [self._tasks[i] for i in idx]
        return [getattr(self.template_env, attr_name)] * len(idx)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        if len(self._get_indices(indices)) != self.num_envs:
            raise ValueError(f"{type(self).__name__} shares its constants across sub-envs: set_attr needs all indices")
        setattr(self.template_env, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        idx = self._get_indices(indices)
        if method_name == "reset_task":
            (task,) = method_args or (method_kwargs["task"],)
            self.set_tasks([task] * len(idx), indices=idx)
            return [None] * len(idx)
        if method_name == "get_task":
            return self.get_tasks(idx)
        if method_name == "sample_tasks":
            (n,) = method_args or (method_kwargs["n"],)
            return [self._sample_with(i, n) for i in idx]
        raise NotImplementedError(
            f"{type(self).__name__} steps all sub-envs as one batch; env_method supports 'reset_task', 'get_task' and "
            f"'sample_tasks', not {method_name!r}. Use make_task_vec_env(..., vec_env_cls='dummy') for per-env objects."
        )

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False] * len(self._get_indices(indices))

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None] * self.num_envs


def is_task_vec_env(venv: Any) -> bool:
    """Whether ``venv`` (possibly wrapped in VecEnvWrappers) has the ``set_tasks`` / ``get_tasks`` API."""
    return isinstance(venv, VecEnv) and callable(getattr(venv, "set_tasks", None)) and callable(getattr(venv, "get_tasks", None))


def make_task_vec_env(
    env_or_id: gym.Env | str,
    n_envs: int,
    seed: int | None = None,
    vec_env_cls: str | type[VecEnv] | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> VecEnv:
    """Make a VecEnv of ``n_envs`` sub-envs of one task distribution, each holding its own task.

    :param env_or_id: a task-distribution env (it is copied, never stepped) or a registered id
        such as ``"sb3_meta/PointMass-v0"``
    :param n_envs: number of sub-envs
    :param seed: sub-env ``i`` is seeded with ``seed + i`` at the first reset (SB3 convention)
    :param vec_env_cls: ``None`` (the distribution's batched VecEnv if it has one, else ``DummyVecEnv``),
        ``"batched"``, ``"dummy"``, ``"subproc"``, or a VecEnv class
    :param env_kwargs: constructor arguments when ``env_or_id`` is an id
    :return: the VecEnv, with ``set_tasks(tasks)`` and ``get_tasks()``
    """
    if isinstance(n_envs, bool) or not isinstance(n_envs, (int, np.integer)) or n_envs < 1:
        raise ValueError(f"n_envs must be an integer >= 1, got {n_envs!r}")
    if isinstance(env_or_id, str):
        env = gym.make(env_or_id, **(env_kwargs or {}))
    elif isinstance(env_or_id, gym.Env):
        if env_kwargs:
            raise ValueError("env_kwargs only applies when env_or_id is an id")
        env = env_or_id
    else:
        raise ValueError(f"Expected a task-distribution env or a registered env id, got {type(env_or_id).__name__}")
    base = get_task_env(env)
    batched_cls = getattr(base, "batched_vec_env_cls", None)
    if vec_env_cls is None:
        vec_env_cls = "batched" if batched_cls is not None else "dummy"
    if vec_env_cls == "batched":
        if batched_cls is None:
            raise ValueError(f"{type(base).__name__} has no batched VecEnv; use vec_env_cls='dummy' or 'subproc'")
        vec_env_cls = batched_cls
    if vec_env_cls in ("dummy", DummyVecEnv):
        vec_env_cls = TaskDummyVecEnv
    elif vec_env_cls in ("subproc", SubprocVecEnv):
        vec_env_cls = TaskSubprocVecEnv
    if not (isinstance(vec_env_cls, type) and issubclass(vec_env_cls, VecEnv)):
        raise ValueError(f"vec_env_cls must be 'batched', 'dummy', 'subproc' or a VecEnv class, got {vec_env_cls!r}")

    if issubclass(vec_env_cls, BatchedTaskVecEnv):
        venv: VecEnv = vec_env_cls(copy.deepcopy(base), int(n_envs))  # type: ignore[call-arg]
    else:
        template = copy.deepcopy(env)

        def make_env() -> gym.Env:
            return copy.deepcopy(template)

        venv = vec_env_cls([make_env for _ in range(int(n_envs))])  # type: ignore[call-arg]
        if not is_task_vec_env(venv):
            raise ValueError(f"{vec_env_cls.__name__} lacks set_tasks/get_tasks; use TaskDummyVecEnv or TaskSubprocVecEnv")
    if seed is not None:
        venv.seed(int(seed))
    return venv
