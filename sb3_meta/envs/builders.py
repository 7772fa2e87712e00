"""The VecEnvs that meta-training, adaptation, evaluation and the baselines sample, built in one place.

- :func:`make_adaptation_vec_env`: copies of a distribution that keep the tasks they are given (adaptation,
  evaluation), batched whenever the env's wrappers allow it;
- :func:`make_mixture_vec_env`: the task mixture (a fresh task at every reset) for the SB3 baselines;
- :class:`AdaptationVecEnvs`: a cache of the former, so that repeated adaptation does not rebuild sub-envs;
- :func:`env_horizon`, :func:`as_task_env`: the episode horizon and the accepted forms of a distribution.
"""

from __future__ import annotations

import copy
import sys
import warnings
from collections.abc import Callable
from typing import Any

import gymnasium as gym
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecEnvWrapper, VecMonitor

from sb3_meta.common.utils import check_int
from sb3_meta.envs.core import TaskEnv
from sb3_meta.envs.vec_env import (
    BatchedTaskVecEnv,
    TaskDummyVecEnv,
    TaskSubprocVecEnv,
    get_task_env,
    is_batchable,
    is_bookkeeping_wrapper,
    is_task_vec_env,
)
from sb3_meta.envs.wrappers import OracleObservation, OracleVecEnv, TaskMixture, check_not_mixture

__all__ = [
    "AdaptationVecEnvs",
    "as_task_env",
    "env_horizon",
    "make_adaptation_vec_env",
    "make_mixture_vec_env",
    "make_task_vec_env",
    "warn_if_adaptation_drops_vec_env_wrappers",
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
    """Episode horizon of a task distribution (possibly wrapped): the shortest of its own ``max_episode_steps``
    and its wrappers' time limits (``gym.make(id, max_episode_steps=10)`` ends episodes after 10 steps), else its
    spec's ``max_episode_steps``."""
    if env is None:
        return None
    limits = [getattr(getattr(env, "unwrapped", env), "max_episode_steps", None)]
    spec = getattr(env, "spec", None)
    while isinstance(env, gym.Wrapper):
        if isinstance(env, gym.wrappers.TimeLimit):
            limits.append(env._max_episode_steps)
        env = env.env
    positive = [int(limit) for limit in limits if limit]
    if positive:
        return min(positive)
    return int(spec.max_episode_steps) if spec is not None and spec.max_episode_steps else None


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
        base = copy.deepcopy(base)
        if batched:
            # adaptation VecEnvs are never rendered: SB3's make_vec_env gives its envs render_mode="rgb_array",
            # which would keep them off the batched VecEnv (which does not render)
            base.render_mode = None
        venv = make_task_vec_env(base, n_envs)
        return OracleVecEnv(venv) if oracle else venv
    return make_task_vec_env(copy.deepcopy(env), n_envs, vec_env_cls="dummy")


#: VecEnv wrappers that adaptation VecEnvs need not repeat: bookkeeping (episode statistics, video, NaN checks), the
#: task plumbing, and the two it applies itself (OracleVecEnv's oracle form, VecNormalize's statistics, frozen).
ADAPTATION_KEEPS_VEC_ENV_WRAPPERS = (
    "VecMonitor",
    "VecVideoRecorder",
    "VecCheckNan",
    "TaskVecEnvWrapper",
    "OracleVecEnv",
    "VecNormalize",
)


def warn_if_adaptation_drops_vec_env_wrappers(venv: VecEnv) -> None:
    """Warn about VecEnv wrappers around a model's task VecEnv that adaptation does not apply.

    ``adapt``, ``adapt_tasks`` and ``evaluate_adaptation`` sample fresh VecEnvs of the model's distribution (with its
    gymnasium wrappers); an SB3 VecEnv wrapper cannot be rebuilt around them in general (e.g. ``VecFrameStack``'s
    buffers are sized by the VecEnv it wraps), so one that changes observations or rewards would make adaptation
    differ from training: gymnasium wrappers on the sub-envs are kept, VecEnv wrappers are not.
    """
    dropped, inner = [], venv
    while isinstance(inner, VecEnvWrapper):
        if type(inner).__name__ not in ADAPTATION_KEEPS_VEC_ENV_WRAPPERS:
            dropped.append(type(inner).__name__)
        inner = inner.venv
    if dropped:
        warnings.warn(
            f"adapt and evaluate_adaptation sample fresh VecEnvs without the VecEnv wrapper(s) {', '.join(dropped)} "
            "around this model's task VecEnv: adaptation would see other observations or rewards than training. "
            "Apply such transformations as gymnasium wrappers on the task distribution instead (they are kept).",
            UserWarning,
            stacklevel=4,
        )


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


def _check_no_ray_options(**ray_options: Any) -> None:
    """Refuse Ray options given for a VecEnv that does not run on Ray (they would be silently ignored)."""
    given = [name for name, value in ray_options.items() if value is not None]
    if given:
        raise ValueError(f"The Ray options {', '.join(given)} only apply with vec_env_cls='ray'")


def _warn_if_a_time_limit_cannot_lengthen(env: gym.Env) -> None:
    """Warn when a TimeLimit is longer than the distribution's own ``max_episode_steps``, which ends episodes first:
    ``gym.make(id, max_episode_steps=500)`` sets gymnasium's TimeLimit only, not the distribution's limit."""
    own = getattr(env.unwrapped, "max_episode_steps", None)
    wrapper = env
    while isinstance(wrapper, gym.Wrapper):
        if isinstance(wrapper, gym.wrappers.TimeLimit) and own and wrapper._max_episode_steps > own:
            name = type(env.unwrapped).__name__
            warnings.warn(
                f"A TimeLimit of {wrapper._max_episode_steps} steps wraps {name}, whose own max_episode_steps={own} "
                f"ends the episodes first (gym.make(id, max_episode_steps=...) only sets the TimeLimit): for longer "
                f"episodes, make the distribution with it, e.g. {name}(max_episode_steps={wrapper._max_episode_steps})",
                UserWarning,
                stacklevel=3,
            )
            return
        wrapper = wrapper.env


def make_task_vec_env(
    env_or_id: gym.Env | str,
    n_envs: int,
    seed: int | None = None,
    vec_env_cls: str | type[VecEnv] | None = None,
    env_kwargs: dict[str, Any] | None = None,
    ray_workers: int | None = None,
    ray_actor_options: dict[str, Any] | None = None,
    ray_address: str | None = None,
) -> VecEnv:
    """Make a VecEnv of ``n_envs`` sub-envs of one task distribution, each holding its own task.

    Each sub-env behaves as a copy of the env: it keeps the env's task if it has one (else it draws its own at
    the first reset), and it samples tasks from its own RNG: ``seed + i`` for sub-env ``i`` when ``seed`` is
    given, else an independent RNG spawned from the env's task RNG (so that a task mixture differs across
    sub-envs).

    :param env_or_id: a task-distribution env, possibly wrapped (it is copied, never stepped), or a registered
        id such as ``"sb3_meta/PointMass-v0"``
    :param n_envs: number of sub-envs
    :param seed: sub-env ``i`` is seeded with ``seed + i`` at the first reset (SB3 convention)
    :param vec_env_cls: ``None`` (the distribution's batched VecEnv if it has one and ``env`` carries no wrapper
        that changes its behaviour, e.g. :class:`~sb3_meta.envs.wrappers.OracleObservation`; else ``DummyVecEnv``),
        ``"batched"``, ``"dummy"``, ``"subproc"``, ``"ray"`` (the batched VecEnv in shards on Ray actors:
        :class:`~sb3_meta.envs.ray_vec_env.RayTaskVecEnv`, needs ``pip install "sb3_meta[ray]"``; the class itself
        means the same), or a VecEnv class
    :param env_kwargs: constructor arguments when ``env_or_id`` is an id
    :param ray_workers: with ``vec_env_cls="ray"``: number of actors (default: one per CPU of the cluster)
    :param ray_actor_options: with ``vec_env_cls="ray"``: actor options (``num_cpus``, ``scheduling_strategy``,
        ``placement_group``, ``resources``...; see :class:`~sb3_meta.envs.ray_vec_env.RayTaskVecEnv`)
    :param ray_address: with ``vec_env_cls="ray"``: the cluster to connect to if this process is not connected yet
    :return: the VecEnv, with ``set_tasks(tasks)`` and ``get_tasks()``
    """
    n_envs = check_int("n_envs", n_envs)
    if isinstance(env_or_id, str):
        env = gym.make(env_or_id, **(env_kwargs or {}))
    elif isinstance(env_or_id, gym.Env):
        if env_kwargs:
            raise ValueError("env_kwargs only applies when env_or_id is an id")
        env = env_or_id
    else:
        raise ValueError(f"Expected a task-distribution env or a registered env id, got {type(env_or_id).__name__}")
    base = get_task_env(env)
    _warn_if_a_time_limit_cannot_lengthen(env)
    batched_cls = getattr(base, "batched_vec_env_cls", None)
    if vec_env_cls is None:
        vec_env_cls = "batched" if batched_cls is not None and is_batchable(env) else "dummy"
    # the class itself means the same as "ray" (its module is loaded already if the caller has the class)
    ray_module = sys.modules.get("sb3_meta.envs.ray_vec_env")
    if vec_env_cls == "ray" or (ray_module is not None and vec_env_cls is ray_module.RayTaskVecEnv):
        from sb3_meta.envs.ray_vec_env import make_ray_task_vec_env  # Ray is optional: its module is loaded only here

        return make_ray_task_vec_env(env, n_envs, seed, ray_workers, ray_actor_options, ray_address)
    _check_no_ray_options(ray_workers=ray_workers, ray_actor_options=ray_actor_options, ray_address=ray_address)
    if vec_env_cls == "batched":
        if batched_cls is None:
            raise ValueError(f"{type(base).__name__} has no batched VecEnv; use vec_env_cls='dummy' or 'subproc'")
        vec_env_cls = batched_cls
    if vec_env_cls == "dummy" or vec_env_cls is DummyVecEnv:
        vec_env_cls = TaskDummyVecEnv
    elif vec_env_cls == "subproc" or vec_env_cls is SubprocVecEnv:
        vec_env_cls = TaskSubprocVecEnv
    if not (isinstance(vec_env_cls, type) and issubclass(vec_env_cls, VecEnv)):
        raise ValueError(f"vec_env_cls must be 'batched', 'dummy', 'subproc', 'ray' or a VecEnv class, got {vec_env_cls!r}")

    if issubclass(vec_env_cls, BatchedTaskVecEnv):
        if not is_batchable(env):  # "batched" or the class: a batched VecEnv steps the distribution, not its wrappers
            raise ValueError(
                f"{env} carries wrappers or a render_mode that a batched VecEnv ({vec_env_cls.__name__}) would drop; "
                "use vec_env_cls='dummy' or 'subproc'"
            )
        venv: VecEnv = vec_env_cls(copy.deepcopy(base), n_envs)  # type: ignore[call-arg]
    else:
        template = copy.deepcopy(env)
        template_base = get_task_env(template)
        if isinstance(template_base, TaskEnv) and template_base.has_task:
            # the env's task is given to every sub-env: it stays when a sub-env is reseeded (TaskEnv.reset)
            template_base.reset_task(template_base.get_task())
        # One independent task RNG per sub-env (and initial-state RNG if the env's was already seeded):
        # plain copies would share one stream, and a task mixture would draw the same tasks in every sub-env.
        task_rngs = template_base.spawn_task_rngs(n_envs) if hasattr(template_base, "spawn_task_rngs") else None
        seeded = getattr(template_base, "_np_random", None) is not None

        def make_env(index: int) -> Callable[[], gym.Env]:
            def _make() -> gym.Env:
                sub_env = copy.deepcopy(template)
                if task_rngs is not None:
                    sub_base = get_task_env(sub_env)
                    sub_base.task_rng = copy.deepcopy(task_rngs[index])
                    if seeded:
                        sub_base.np_random = task_rngs[index].spawn(1)[0]
                return sub_env

            return _make

        # VecEnv's own __init__ takes the spaces; its subclasses here take env factories
        venv = vec_env_cls([make_env(i) for i in range(n_envs)])  # type: ignore[call-arg, arg-type]
        if not is_task_vec_env(venv):
            raise ValueError(f"{vec_env_cls.__name__} lacks set_tasks/get_tasks; use TaskDummyVecEnv or TaskSubprocVecEnv")
    if seed is not None:
        venv.seed(int(seed))
    return venv
