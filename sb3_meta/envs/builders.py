"""The VecEnvs that meta-training, adaptation, evaluation and the baselines sample, built in one place.

- :func:`make_adaptation_vec_env`: copies of a distribution that keep the tasks they are given (adaptation,
  evaluation), batched whenever the env's wrappers allow it;
- :func:`make_mixture_vec_env`: the task mixture (a fresh task at every reset) for the SB3 baselines;
- :class:`AdaptationVecEnvs`: a cache of the former, so that repeated adaptation does not rebuild sub-envs;
- :func:`env_horizon`, :func:`as_task_env`: the episode horizon and the accepted forms of a distribution.
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
from stable_baselines3.common.vec_env import VecEnv, VecMonitor

from sb3_meta.common.utils import check_int
from sb3_meta.envs.vec_env import get_task_env, is_bookkeeping_wrapper, make_task_vec_env
from sb3_meta.envs.wrappers import OracleObservation, OracleVecEnv, TaskMixture, check_not_mixture

__all__ = [
    "AdaptationVecEnvs",
    "as_task_env",
    "env_horizon",
    "make_adaptation_vec_env",
    "make_mixture_vec_env",
    "wrapper_layout",
]


def as_task_env(env: Any, who: str = "this function") -> gym.Env:
    """``env`` as a gymnasium env over a task distribution (an id is made with ``gym.make``); ValueError otherwise."""
    if isinstance(env, str):
        env = gym.make(env)
    if isinstance(env, VecEnv):
        raise ValueError(
            f"{who} needs the task distribution (a gymnasium env such as PointMassTasks() or an id), "
            f"not a VecEnv ({type(env).__name__}): it builds its own batched VecEnv"
        )
    if not isinstance(env, gym.Env):
        raise ValueError(f"env must be a task-distribution env or a registered id, got {type(env).__name__}")
    get_task_env(env)  # ValueError for an env that is not a task distribution
    return env


def env_horizon(env: Any) -> int | None:
    """Episode horizon of a task distribution: its ``max_episode_steps``, else its spec's, else its time limit's."""
    if env is None:
        return None
    horizon = getattr(getattr(env, "unwrapped", env), "max_episode_steps", None)
    if horizon:
        return int(horizon)
    spec = getattr(env, "spec", None)
    if spec is not None and spec.max_episode_steps:
        return int(spec.max_episode_steps)
    while isinstance(env, gym.Wrapper):
        if isinstance(env, gym.wrappers.TimeLimit):
            return int(env._max_episode_steps)
        env = env.env
    return None


def wrapper_layout(env: gym.Env) -> tuple[bool, bool]:
    """``(oracle, only_neutral)``: whether ``env`` carries :class:`OracleObservation`, and whether every other
    wrapper is neutral for a batched VecEnv (bookkeeping, a long enough time limit, :class:`TaskMixture`)."""
    oracle, only_neutral = False, True
    while isinstance(env, gym.Wrapper):
        if isinstance(env, OracleObservation):
            oracle = True
        elif not isinstance(env, TaskMixture):
            only_neutral &= is_bookkeeping_wrapper(env)
        env = env.env
    return oracle, only_neutral


def make_adaptation_vec_env(env: gym.Env, n_envs: int) -> VecEnv:
    """A fresh VecEnv of ``n_envs`` copies of ``env`` for adaptation and evaluation, batched whenever possible.

    Plain distributions get their batched VecEnv; the oracle form gets it wrapped in :class:`OracleVecEnv`; envs
    with other wrappers run through SB3's ``DummyVecEnv`` with their wrappers. Sub-envs keep the tasks they are
    given: a task mixture is refused (:func:`check_not_mixture`). ``env`` itself is never stepped.
    """
    check_not_mixture(env)
    n_envs = check_int("n_envs", n_envs, 1)
    base = get_task_env(env)
    oracle, only_neutral = wrapper_layout(env)
    batched = getattr(base, "batched_vec_env_cls", None) is not None
    if only_neutral and (not oracle or (batched and isinstance(base.observation_space, gym.spaces.Box))):
        venv = make_task_vec_env(copy.deepcopy(base), n_envs)
        return OracleVecEnv(venv) if oracle else venv
    return make_task_vec_env(copy.deepcopy(env), n_envs, vec_env_cls="dummy")


def make_mixture_vec_env(env: gym.Env | str, n_envs: int, seed: int | None = None, oracle: bool = False) -> VecEnv:
    """A VecMonitor-wrapped VecEnv of ``n_envs`` sub-envs that each draw a fresh task at every reset.

    Uses the distribution's batched VecEnv (``sample_task_on_reset=True`` on a copy of the distribution) where it
    has one and ``env`` carries no wrapper that changes behaviour; otherwise SB3's ``DummyVecEnv`` over
    :class:`~sb3_meta.envs.TaskMixture` copies of ``env``. ``env`` itself is not modified.

    :param env: a task distribution (possibly wrapped; an :class:`~sb3_meta.envs.OracleObservation` is ignored,
        use ``oracle``) or a registered id
    :param n_envs: number of sub-envs
    :param seed: sub-env ``i`` is seeded with ``seed + i`` (task and initial-state RNGs)
    :param oracle: append the task to the observations (the oracle's env)
    :return: the VecEnv
    """
    env = as_task_env(env, "make_mixture_vec_env")
    n_envs = check_int("n_envs", n_envs, 1)
    base = copy.deepcopy(get_task_env(env))
    base.sample_task_on_reset = True
    _, only_neutral = wrapper_layout(env)
    batched = getattr(base, "batched_vec_env_cls", None) is not None
    if only_neutral and (batched or not oracle):
        venv = make_task_vec_env(base, n_envs, seed=seed)
        if oracle:
            venv = OracleVecEnv(venv)
    else:
        inner = env
        while isinstance(inner, (OracleObservation, TaskMixture)):  # re-applied below, outermost
            inner = inner.env
        mixture: gym.Env = TaskMixture(copy.deepcopy(inner))
        if oracle:
            mixture = OracleObservation(mixture)
        venv = make_task_vec_env(mixture, n_envs, seed=seed, vec_env_cls="dummy")
    return VecMonitor(venv)


class AdaptationVecEnvs:
    """The adaptation VecEnvs of :func:`make_adaptation_vec_env`, built on first use per (env, size, role) and
    reused until :meth:`close`: building many MuJoCo sub-envs is not free, and callbacks adapt repeatedly.

    The envs are kept alive with their VecEnvs, so that an ``id`` is never reused for another env.

    :param max_entries: VecEnvs kept at most; all are closed when one more is needed
    """

    def __init__(self, max_entries: int = 8) -> None:
        self.max_entries = check_int("max_entries", max_entries, 1)
        self._venvs: dict[tuple[int, int, str], tuple[gym.Env, VecEnv]] = {}

    def get(self, env: gym.Env, n_envs: int, role: str = "adapt") -> VecEnv:
        """The VecEnv of ``n_envs`` copies of ``env`` for ``role`` (separate roles never share episodes)."""
        key = (id(env), n_envs, role)
        if key not in self._venvs:
            if len(self._venvs) >= self.max_entries:
                self.close()
            self._venvs[key] = (env, make_adaptation_vec_env(env, n_envs))
        return self._venvs[key][1]

    def close(self) -> None:
        """Close every VecEnv."""
        for _, venv in self._venvs.values():
            venv.close()
        self._venvs = {}

    def __len__(self) -> int:
        return len(self._venvs)
