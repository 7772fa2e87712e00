"""Wrappers that turn a task distribution into the envs of the non-meta baselines.

- :class:`OracleObservation`: the *oracle* form of a distribution: the current task is appended to the
  observation (``Task.as_array()``), so that one ordinary policy can be trained on all tasks at once;
- :class:`TaskMixture`: a fresh task at every reset (the task mixture of the *pretrained* baseline).

Both are plain gymnasium wrappers, so SB3's ``make_vec_env`` / ``DummyVecEnv`` and ``check_env`` take them as
they are; they keep the task API (``sample_tasks``, ``reset_task``, ``get_task``) reachable directly, through
``env.unwrapped`` and through gymnasium's ``get_wrapper_attr`` (which SB3's ``env_method`` uses).
"""

from __future__ import annotations

import copy
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import WrapperSpec, get_env_id, parse_env_id
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from sb3_meta.envs.core import Task
from sb3_meta.envs.vec_env import get_task_env, is_task_vec_env, vec_env_distribution

__all__ = [
    "OracleObservation",
    "OracleVecEnv",
    "TaskMixture",
    "check_not_mixture",
    "make_oracle_env",
    "oracle_env_id",
    "oracle_observation_space",
    "register_oracle_env",
]

#: Key of the task in ``Dict`` observations of :class:`OracleObservation`.
TASK_KEY = "task"


class _TaskAPI:
    """The task methods of the wrapped distribution, forwarded (``env.sample_tasks(...)`` on the wrapper)."""

    env: gym.Env

    @property
    def task_env(self) -> Any:
        """The task distribution under this wrapper (``env.unwrapped``, checked)."""
        return get_task_env(self.env)

    @property
    def task_type(self) -> type[Task]:
        """The task class of the wrapped distribution."""
        return self.task_env.task_type

    def sample_tasks(self, n: int) -> list[Task]:
        """Draw ``n`` tasks with the wrapped distribution's RNG."""
        return self.task_env.sample_tasks(n)

    def reset_task(self, task: Task) -> None:
        """Switch the wrapped distribution to ``task``."""
        self.task_env.reset_task(task)

    def get_task(self) -> Task:
        """The current task of the wrapped distribution."""
        return self.task_env.get_task()

    def validate_task(self, task: Any) -> Task:
        """Raise ``ValueError`` unless ``task`` is a task of the wrapped distribution."""
        return self.task_env.validate_task(task)


def _task_size(task_env: Any) -> int:
    """Length of ``Task.as_array()`` for this distribution, without advancing its task RNG."""
    task = getattr(task_env, "_task", None)
    if task is None:
        rng = getattr(task_env, "task_rng", None)
        if callable(getattr(task_env, "_sample_task", None)) and isinstance(rng, np.random.Generator):
            task = task_env._sample_task(copy.deepcopy(rng))
        else:
            task = copy.deepcopy(task_env).sample_tasks(1)[0]
    return int(task.as_array().size)


def oracle_observation_space(space: gym.Space, task_size: int, who: str) -> gym.Space:
    """The observation space with a task of ``task_size`` numbers appended (unbounded: tasks outside the sampling
    range are allowed): a flat ``Box`` grows by ``task_size``, a ``Dict`` gets a ``"task"`` entry."""
    task_low = np.full(task_size, -np.inf)
    task_high = np.full(task_size, np.inf)
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        dtype = space.dtype if np.issubdtype(space.dtype, np.floating) else np.dtype(np.float32)
        return gym.spaces.Box(
            low=np.concatenate([space.low.astype(dtype), task_low.astype(dtype)]),
            high=np.concatenate([space.high.astype(dtype), task_high.astype(dtype)]),
            dtype=dtype,  # type: ignore[arg-type]
        )
    if isinstance(space, gym.spaces.Dict):
        if TASK_KEY in space.spaces:
            raise ValueError(f"{who}: the observation space already has a {TASK_KEY!r} entry")
        task_space = gym.spaces.Box(task_low.astype(np.float32), task_high.astype(np.float32), dtype=np.float32)
        return gym.spaces.Dict({**space.spaces, TASK_KEY: task_space})
    raise ValueError(f"{who} needs a flat Box or a Dict observation space, got {space}")


class OracleObservation(_TaskAPI, gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Append the current task (``Task.as_array()``) to every observation: the oracle form of a distribution.

    A flat ``Box`` observation space is extended by the task's length (unbounded: tasks outside the sampling
    range are allowed); a ``Dict`` space gets a ``"task"`` entry. The task shown is the one the reward uses,
    so after ``reset_task`` mid-episode the next observation already shows the new task.

    :param env: a task distribution (possibly wrapped)
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.ObservationWrapper.__init__(self, env)
        self.task_size = _task_size(get_task_env(env))
        self.observation_space = oracle_observation_space(env.observation_space, self.task_size, "OracleObservation")

    def observation(self, observation: Any) -> Any:
        """The observation with the current task appended."""
        task = self.get_task().as_array()
        if task.size != self.task_size:
            raise ValueError(f"OracleObservation: expected a task of {self.task_size} numbers, got {task.size} ({task})")
        if isinstance(self.observation_space, gym.spaces.Dict):
            return {**observation, TASK_KEY: task}
        dtype = self.observation_space.dtype
        return np.concatenate([np.asarray(observation, dtype=dtype).ravel(), task.astype(dtype)])


class TaskMixture(_TaskAPI, gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Draw a fresh task at every reset (``reset(options={"sample_task": True})``): the task mixture.

    ``reset(options={"task": task})`` still sets that task for the episode. The draws use the distribution's
    own RNG, so ``reset(seed=...)`` makes the sequence of tasks reproducible.

    :param env: a task distribution (possibly wrapped)
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        get_task_env(env)  # clear error now rather than at the first reset

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset with a freshly drawn task (unless ``options`` gives one)."""
        options = dict(options or {})
        if "task" not in options:
            options["sample_task"] = True
        return self.env.reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step the wrapped env."""
        return self.env.step(action)


def make_oracle_env(env_id_or_env: str | gym.Env, **env_kwargs: Any) -> OracleObservation:
    """The oracle form of a task distribution: :class:`OracleObservation` around it.

    :param env_id_or_env: a registered id (e.g. ``"sb3_meta/PointMass-v0"``) or a task-distribution env
    :param env_kwargs: constructor arguments when ``env_id_or_env`` is an id
    :return: the wrapped env
    """
    if isinstance(env_id_or_env, str):
        return OracleObservation(gym.make(env_id_or_env, **env_kwargs))
    if isinstance(env_id_or_env, gym.Env):
        if env_kwargs:
            raise ValueError("make_oracle_env: env_kwargs only apply when given an env id")
        return OracleObservation(env_id_or_env)
    raise ValueError(f"make_oracle_env: expected an env id or a gymnasium env, got {type(env_id_or_env).__name__}")


def oracle_env_id(env_id: str) -> str:
    """Id of the oracle form of a registered env: ``"sb3_meta/PointMass-v0"`` -> ``"sb3_meta/PointMassOracle-v0"``."""
    namespace, name, version = parse_env_id(env_id)
    return get_env_id(namespace, f"{name}Oracle", version)


def register_oracle_env(env_id: str) -> str:
    """Register the oracle form of ``env_id`` (see :func:`oracle_env_id`) unless it already is.

    The oracle id has the same entry point, arguments and time limit, plus :class:`OracleObservation` as the
    outermost wrapper, so ``gym.make(oracle_env_id(env_id), **kwargs)`` equals
    ``OracleObservation(gym.make(env_id, **kwargs))``.

    :param env_id: a registered task-distribution id
    :return: the oracle id
    """
    oracle_id = oracle_env_id(env_id)
    if oracle_id not in gym.registry:
        spec = gym.spec(env_id)
        name = OracleObservation.__name__
        oracle = WrapperSpec(name=name, entry_point=f"{__name__}:{name}", kwargs={})
        gym.register(
            id=oracle_id,
            entry_point=spec.entry_point,
            reward_threshold=spec.reward_threshold,
            nondeterministic=spec.nondeterministic,
            max_episode_steps=spec.max_episode_steps,
            order_enforce=spec.order_enforce,
            disable_env_checker=spec.disable_env_checker,
            additional_wrappers=(*spec.additional_wrappers, oracle),
            kwargs=copy.deepcopy(spec.kwargs),
        )
    return oracle_id


def _oracle_task_size(venv: VecEnv) -> int:
    """How many numbers a task of ``venv``'s distribution has; its sub-envs may have no task before their first
    reset, so it is read from the distribution (a batched VecEnv's template, or a copy of SB3 sub-env 0)."""
    source = vec_env_distribution(venv)
    if source is not None:
        return _task_size(get_task_env(source))
    return int(venv.get_tasks(indices=[0])[0].as_array().size)  # type: ignore[attr-defined]  # another task VecEnv


def check_not_mixture(env: Any) -> None:
    """Raise ``ValueError`` if ``env`` draws a new task at every reset (a task mixture).

    Meta-training, adaptation and evaluation set each sub-env's task themselves and need it kept: every entry
    point that adapts refuses a mixture with this error.
    """
    wrapped = env
    while isinstance(wrapped, gym.Wrapper):
        if isinstance(wrapped, TaskMixture):
            break
        wrapped = wrapped.env
    if isinstance(wrapped, TaskMixture) or getattr(get_task_env(env), "sample_task_on_reset", False):
        raise ValueError(
            "This env draws a new task at every reset (task mixture): meta-learning and adaptation need each sub-env "
            "to keep the task it is given. Pass the task distribution without TaskMixture / sample_task_on_reset."
        )


class OracleVecEnv(VecEnvWrapper):
    """Append each sub-env's task (``Task.as_array()``) to its observation: :class:`OracleObservation` for a VecEnv.

    Wrapping a batched task VecEnv keeps its speed (``OracleObservation`` on a single env forces SB3's
    ``DummyVecEnv``). Observations and the observation space equal those of ``OracleObservation`` around the
    same distribution; ``infos[i]["terminal_observation"]`` shows the task of the episode that ended.

    :param venv: a task VecEnv (``make_task_vec_env``) with a flat ``Box`` observation space
    """

    def __init__(self, venv: VecEnv) -> None:
        if not is_task_vec_env(venv):
            raise ValueError(f"OracleVecEnv needs a task VecEnv (with get_tasks/set_tasks), got {type(venv).__name__}")
        space = venv.observation_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"OracleVecEnv needs a flat Box observation space, got {space}")
        self.task_size = _oracle_task_size(venv)
        super().__init__(venv, observation_space=oracle_observation_space(space, self.task_size, "OracleVecEnv"))
        dtype = self.observation_space.dtype
        self._tasks: list[Any] = [None] * self.num_envs
        self._task_arrays = np.zeros((self.num_envs, self.task_size), dtype=dtype)
        self._arrays_before = self._task_arrays.copy()  # tasks of the step under way (for terminal observations)

    def _refresh_tasks(self) -> list[Any]:
        tasks = self.venv.get_tasks()  # type: ignore[attr-defined]
        for i, task in enumerate(tasks):
            if task is not self._tasks[i]:
                self._task_arrays[i] = task.as_array()
                self._tasks[i] = task
        return tasks

    def _augment(self, obs: np.ndarray, task_arrays: np.ndarray) -> np.ndarray:
        dtype = self.observation_space.dtype
        obs = np.asarray(obs, dtype=dtype).reshape(len(task_arrays), -1)
        return np.concatenate([obs, task_arrays.astype(dtype)], axis=1)

    def reset(self) -> VecEnvObs:
        obs = self.venv.reset()
        self._refresh_tasks()
        return self._augment(obs, self._task_arrays)  # type: ignore[arg-type]

    def step_async(self, actions: np.ndarray) -> None:
        self._refresh_tasks()  # tasks may have been set since the last step (set_tasks)
        self._arrays_before = self._task_arrays.copy()
        self.venv.step_async(actions)

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        for i in np.flatnonzero(dones).tolist():
            if "terminal_observation" in infos[i]:
                terminal = self._augment(infos[i]["terminal_observation"][None], self._arrays_before[i : i + 1])
                infos[i]["terminal_observation"] = terminal[0]
        self._refresh_tasks()
        return self._augment(obs, self._task_arrays), rewards, dones, infos  # type: ignore[arg-type]
