"""Vector envs whose sub-envs each hold a task, and ``make_task_vec_env`` that picks the fastest one.

A meta-iteration samples ``meta_batch_size`` tasks x ``fast_batch_size`` episodes as ONE batch: one
VecEnv with ``meta_batch_size * fast_batch_size`` sub-envs, sub-env ``i`` holding task ``i // fast_batch_size``.
Distributions with a batched implementation (``TaskEnv.batched_vec_env_cls``) step the whole batch at once
(numpy for the point mass, a native thread pool for MuJoCo); any other task distribution works through
SB3's ``DummyVecEnv`` / ``SubprocVecEnv`` with the same ``set_tasks`` / ``get_tasks`` API.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, cast

import gymnasium as gym
import numpy as np
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from sb3_meta.common.utils import check_int
from sb3_meta.envs.core import Task, TaskEnv, as_task_list

__all__ = [
    "BatchedTaskVecEnv",
    "PackedInfos",
    "TaskDummyVecEnv",
    "TaskSubprocVecEnv",
    "TaskVecEnvWrapper",
    "VecEnvLostError",
    "check_action",
    "check_actions",
    "check_idle_mask",
    "checked_indices",
    "get_task_env",
    "is_batchable",
    "is_bookkeeping_wrapper",
    "is_task_vec_env",
    "sub_env_copy",
    "task_env_method",
    "with_task_api",
]


class VecEnvLostError(RuntimeError):
    """A VecEnv lost sub-envs it cannot rebuild (a ``SubprocVecEnv`` worker killed, a Ray shard without a new
    actor): make a new VecEnv and resume from the last checkpoint."""


def check_idle_mask(idle: Any, n_envs: int) -> np.ndarray:
    """``idle`` as a fresh bool array of shape ``(n_envs,)`` (the argument of ``set_idle_envs``), or a clear error."""
    mask = np.array(idle, dtype=bool)
    if mask.shape != (n_envs,):
        raise ValueError(f"idle must be a bool mask of shape ({n_envs},), got shape {mask.shape}")
    return mask


def check_actions(actions: Any, action_space: gym.Space, n_envs: int) -> np.ndarray:
    """Validate a batch of actions; raise ``ValueError`` on a wrong shape, a non-numeric or a non-finite value.

    :param actions: ``n_envs`` actions stacked (for ``n_envs == 1`` a single unbatched action is accepted too)
    :param action_space: the action space of one sub-env (``Box`` or ``Discrete``)
    :param n_envs: number of sub-envs
    :return: the actions as float64 (``Box``) or int64 (``Discrete``), shape ``(n_envs, *action_space.shape)``
    """
    try:
        actions = np.asarray(actions)
    except ValueError as e:  # ragged nested lists
        raise ValueError(f"Expected {n_envs} actions from {action_space}, got {actions!r}") from e
    if not (np.issubdtype(actions.dtype, np.integer) or np.issubdtype(actions.dtype, np.floating)):
        raise ValueError(f"Expected real numeric actions, got dtype {actions.dtype}")
    if isinstance(action_space, gym.spaces.Box):
        expected = (n_envs, *action_space.shape)
        if actions.shape != expected:
            if n_envs == 1 and actions.shape == action_space.shape:
                actions = actions[None]
            else:
                raise ValueError(f"Expected actions of shape {expected} ({n_envs} envs x {action_space}), got {actions.shape}")
        actions = actions.astype(np.float64)
        if not np.all(np.isfinite(actions)):
            raise ValueError("Actions must be finite; got NaN or inf (the state was left unchanged)")
        return actions
    if isinstance(action_space, gym.spaces.Discrete):
        low, high = int(action_space.start), int(action_space.start + action_space.n)
        if actions.size == n_envs:
            actions = actions.reshape(n_envs)
        if actions.shape != (n_envs,):
            raise ValueError(f"Expected {n_envs} discrete actions, got shape {actions.shape}")
        if not np.all(np.isfinite(actions)) or not np.all(actions == np.round(actions)):
            raise ValueError(f"Discrete actions must be integers in [{low}, {high}), got {actions!r}")
        actions = actions.astype(np.int64)
        if np.any(actions < low) or np.any(actions >= high):
            raise ValueError(f"Discrete actions must lie in [{low}, {high}), got {actions!r}")
        return actions
    raise ValueError(f"Unsupported action space {action_space}")


def check_action(action: Any, action_space: gym.Space) -> np.ndarray:
    """Validate the action of a single env (:func:`check_actions` for one env, with errors in one env's terms).

    :return: the action as float64 (``Box``, shape ``action_space.shape``) or int64 (``Discrete``, shape ``()``)
    """
    shape = np.shape(action) if not isinstance(action, (str, bytes)) else None
    if isinstance(action_space, gym.spaces.Box) and shape is not None and shape != action_space.shape:
        raise ValueError(f"Expected an action of shape {action_space.shape} ({action_space}), got shape {shape}")
    return check_actions(np.asarray(action)[None], action_space, 1)[0]


def get_task_env(env: Any) -> TaskEnv:
    """The task distribution under ``env`` (a gymnasium env, possibly wrapped); clear error if it is none."""
    base = env.unwrapped if isinstance(env, gym.Env) else env
    missing = [m for m in ("sample_tasks", "reset_task", "get_task") if not callable(getattr(base, m, None))]
    if missing:
        raise ValueError(
            f"{type(base).__name__} is not a task distribution: it lacks {', '.join(missing)}. "
            "Use an env from sb3_meta.envs or subclass sb3_meta.envs.TaskEnv."
        )
    return cast(TaskEnv, base)


def sub_env_copy(venv: VecEnv, index: int = 0) -> gym.Env:
    """A copy, in this process, of sub-env ``index`` of an SB3 ``DummyVecEnv`` or ``SubprocVecEnv``, with its
    wrappers (SB3's outer ``Monitor`` bookkeeping left out): what adaptation and task sampling copy.

    A ``SubprocVecEnv`` sub-env lives in another process: it is reduced there with the pickle protocol
    (``__reduce_ex__``) and rebuilt here, so it must be picklable, as anything sent to a sub-process is.

    :raises ValueError: ``venv`` is neither, or its sub-env cannot be copied
    """
    if isinstance(venv, DummyVecEnv):
        env = venv.envs[index]
        while isinstance(env, Monitor):  # a Monitor may hold an open results file: copy what it wraps
            env = env.env
        return copy.deepcopy(env)
    if not isinstance(venv, SubprocVecEnv):
        raise ValueError(f"sub_env_copy needs a DummyVecEnv or SubprocVecEnv, got {type(venv).__name__}")
    try:
        if issubclass(venv.get_attr("__class__", indices=[index])[0], Monitor):
            env = venv.get_attr("env", indices=[index])[0]  # what the Monitor wraps, pickled as an attribute
        else:
            reduced = venv.env_method("__reduce_ex__", 2, indices=[index])[0]
            if isinstance(reduced, str) or len(reduced) < 2:
                raise TypeError(f"its __reduce_ex__ names a global ({reduced!r}), not a copy")
            env = reduced[0](*reduced[1])
            state = reduced[2] if len(reduced) > 2 else None
            if state is not None:
                setstate = getattr(env, "__setstate__", None)
                setstate(state) if callable(setstate) else env.__dict__.update(state)
    except Exception as e:
        # SB3's workers exit when a reply cannot be pickled: then the VecEnv is unusable, and is closed here so that
        # no worker is left behind
        worker = venv.processes[index]
        worker.join(timeout=1.0)
        closed = ""
        if not worker.is_alive():
            for process in venv.processes:
                process.terminate()
                process.join()
            venv.closed = True
            closed = f"; sub-env {index}'s process exited on the reply, so the VecEnv was closed: make a new one"
        raise ValueError(
            f"Cannot copy sub-env {index} of the SubprocVecEnv into this process ({type(e).__name__}: {e}). The model "
            "needs a copy to sample tasks and to adapt: make the sub-envs picklable (no lambdas or open files in "
            f"wrappers), or pass the task distribution itself or a DummyVecEnv{closed}"
        ) from e
    while isinstance(env, Monitor):
        env = env.env
    return env


def vec_env_distribution(venv: VecEnv) -> gym.Env | None:
    """The task distribution of which ``venv``'s sub-envs are copies, read without stepping or resetting them.

    Their tasks cannot tell it (a sub-env may have none before its first reset). It is a batched VecEnv's
    ``template_env`` (unwrapped, not a copy); a copy of sub-env 0 of SB3's Dummy/SubprocVecEnv, with its wrappers
    (out of the worker process for a SubprocVecEnv, so it must pickle); None for another VecEnv class. VecEnv
    wrappers around ``venv`` are looked through.
    """
    inner = venv
    while isinstance(inner, VecEnvWrapper):
        inner = inner.venv
    template = getattr(inner, "template_env", None)
    if template is not None:
        return template
    if isinstance(inner, (DummyVecEnv, SubprocVecEnv)):
        return sub_env_copy(inner, 0)
    return None


def checked_indices(venv: VecEnv, indices: VecEnvIndices) -> list[int]:
    """``venv._get_indices(indices)`` as a list of indices in ``[0, num_envs)``: negative ones count from the end,
    as with SB3's VecEnvs (a Python list of sub-envs); a ``ValueError`` for one out of range."""
    given = [int(i) for i in venv._get_indices(indices)]
    bad = [i for i in given if not -venv.num_envs <= i < venv.num_envs]
    if bad:
        raise ValueError(f"{type(venv).__name__}: sub-env indices {bad} out of range [-{venv.num_envs}, {venv.num_envs})")
    return [i % venv.num_envs for i in given]


class _TaskVecEnvMixin(VecEnv):
    """``set_tasks`` / ``get_tasks`` for SB3's own vector envs (the fallback for any task distribution).

    A ``VecEnv`` subclass (never made on its own) so that ``TaskDummyVecEnv`` has ``DummyVecEnv``'s object layout:
    :func:`with_task_api` turns a user's ``DummyVecEnv`` into one in place.
    """

    num_envs: int

    def _task_type(self) -> type[Task]:
        return self.get_attr("task_type", indices=[0])[0]  # type: ignore[attr-defined]

    def set_tasks(self, tasks: Sequence[Task], indices: VecEnvIndices = None) -> None:
        """Give sub-env ``indices[k]`` the task ``tasks[k]``; all tasks are validated before any is applied."""
        idx = checked_indices(cast(VecEnv, self), indices)  # the mixin only comes before a VecEnv base
        tasks = as_task_list(tasks, self._task_type(), len(idx), f"{type(self).__name__}.set_tasks")
        # One env_method call per distinct task (a meta-batch gives each task to fast_batch_size sub-envs), not per
        # sub-env: with a SubprocVecEnv each call is a round trip to the workers.
        groups: list[tuple[Task, list[int]]] = []
        for i, task in zip(idx, tasks, strict=True):
            group = next((g for g in groups if g[0] is task or g[0] == task), None)
            if group is None:
                groups.append((task, [i]))
            else:
                group[1].append(i)
        # The sub-envs' own checks (validate_task) run on every task before any sub-env switches.
        for task, group_indices in groups:
            self.env_method("validate_task", task, indices=group_indices)  # type: ignore[attr-defined]
        for task, group_indices in groups:
            self.env_method("reset_task", task, indices=group_indices)  # type: ignore[attr-defined]

    def get_tasks(self, indices: VecEnvIndices = None) -> list[Task]:
        """The task of each sub-env in ``indices`` (all by default)."""
        idx = checked_indices(cast(VecEnv, self), indices)  # the batched VecEnvs' errors and negative indices
        return self.env_method("get_task", indices=idx)  # type: ignore[attr-defined]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """SB3's ``get_attr``; ``"task"`` gives each sub-env's task (``get_tasks``), as on the batched VecEnvs (the
        sub-envs keep it behind ``get_task()``, not as an attribute)."""
        if attr_name == "task":
            return self.get_tasks(indices)
        return super().get_attr(attr_name, indices)  # type: ignore[misc]

    def step_async(self, actions: np.ndarray) -> None:
        """Validate the whole batch of actions first, so that a bad action steps no sub-env (and kills no worker)."""
        space = self.action_space  # type: ignore[attr-defined]
        if isinstance(space, (gym.spaces.Box, gym.spaces.Discrete)):
            checked = check_actions(actions, space, self.num_envs)
            actions = np.asarray(actions).reshape(checked.shape)
        super().step_async(actions)  # type: ignore[misc]

    def sample_task_batch(self, n: int) -> list[Task]:
        """Draw ``n`` tasks with the RNG of sub-env 0."""
        return self.env_method("sample_tasks", n, indices=[0])[0]  # type: ignore[attr-defined]


class TaskDummyVecEnv(_TaskVecEnvMixin, DummyVecEnv):
    """SB3 ``DummyVecEnv`` over task distributions, with ``set_tasks`` / ``get_tasks``."""


class TaskSubprocVecEnv(_TaskVecEnvMixin, SubprocVecEnv):
    """SB3 ``SubprocVecEnv`` over task distributions, with ``set_tasks`` / ``get_tasks``."""


class TaskVecEnvWrapper(_TaskVecEnvMixin, VecEnvWrapper):
    """``set_tasks`` / ``get_tasks`` on top of any SB3 VecEnv whose sub-envs are task distributions.

    For the VecEnvs SB3 users already make, e.g. ``make_vec_env("sb3_meta/PointMass-v0", n_envs=400)``
    (DummyVecEnv or SubprocVecEnv, sub-envs in a Monitor): tasks reach the sub-envs through ``env_method``,
    which SB3 forwards through gymnasium wrappers.
    """

    def reset(self) -> VecEnvObs:
        return self.venv.reset()

    def step_wait(self) -> VecEnvStepReturn:
        return self.venv.step_wait()


def with_task_api(venv: VecEnv) -> VecEnv:
    """``venv``, an SB3 VecEnv chain of task distributions (``make_vec_env(...)``, wrapped or not), with
    ``set_tasks`` / ``get_tasks``.

    The chain keeps its objects and its layout: the ``DummyVecEnv`` / ``SubprocVecEnv`` at its bottom becomes a
    ``TaskDummyVecEnv`` / ``TaskSubprocVecEnv`` in place (the same object and state, one subclass down; the
    wrappers above reach its task API through SB3's attribute forwarding). A layer added anywhere would break SB3's
    ``sync_envs_normalization``, which ``EvalCallback`` runs over the training and the eval chain in step, and a
    rebuilt chain would train another ``VecNormalize`` than the user's (whose ``save()`` they keep calling). Any
    other VecEnv class gets a :class:`TaskVecEnvWrapper` on top.
    """
    base = venv.unwrapped
    task_cls = {DummyVecEnv: TaskDummyVecEnv, SubprocVecEnv: TaskSubprocVecEnv}.get(type(base))
    if task_cls is None:
        return TaskVecEnvWrapper(venv)
    base.__class__ = task_cls
    return venv


def sub_envs_are_task_distributions(venv: VecEnv) -> bool:
    """Whether every sub-env of ``venv`` (through its wrappers) has ``sample_tasks`` / ``reset_task`` / ``get_task``."""
    try:
        return all(all(callable(m) for m in venv.get_attr(name)) for name in ("sample_tasks", "reset_task", "get_task"))
    except AttributeError:
        return False


@dataclasses.dataclass
class PackedInfos:
    """The infos of one step of a batched task VecEnv as arrays: cheap to send (a Ray shard's step), unpacked into
    SB3's list of dicts by :meth:`unpack`.

    :param tasks: the task of each sub-env for the step taken
    :param time_limit: ``TimeLimit.truncated`` per sub-env
    :param columns: per-sub-env values (``x_velocity``, reward components...), one array per key
    :param terminal_observations: the last observation of each sub-env whose episode ended, by index
    """

    tasks: list[Task]
    time_limit: np.ndarray
    columns: dict[str, np.ndarray]
    terminal_observations: dict[int, np.ndarray]

    def slice(self, start: int, stop: int) -> PackedInfos:
        """The infos of sub-envs ``start..stop-1`` (as a shard of them would pack them)."""
        return PackedInfos(
            tasks=self.tasks[start:stop],
            time_limit=self.time_limit[start:stop],
            columns={key: values[start:stop] for key, values in self.columns.items()},
            terminal_observations={i - start: o for i, o in self.terminal_observations.items() if start <= i < stop},
        )

    def unpack(self) -> list[dict[str, Any]]:
        """SB3's infos: one dict per sub-env, with ``task``, ``TimeLimit.truncated``, the columns' values (Python
        scalars) and ``terminal_observation`` where an episode ended."""
        infos: list[dict[str, Any]] = [
            {"task": task, "TimeLimit.truncated": flag}
            for task, flag in zip(self.tasks, self.time_limit.tolist(), strict=True)
        ]
        for key, values in self.columns.items():
            for info, value in zip(infos, values.tolist(), strict=True):
                info[key] = value
        for i, obs in self.terminal_observations.items():
            infos[i]["terminal_observation"] = obs
        return infos


class BatchedTaskVecEnv(VecEnv):
    """Base class of the batched task VecEnvs: ``n_envs`` copies of one task distribution stepped together.

    Subclasses hold the state of all sub-envs in arrays and implement ``_apply_tasks(indices, tasks)``,
    ``_reset_envs(indices)``, ``_observations()``, ``step_async`` and ``step_wait`` (ending with
    :meth:`_finish_step`, which does SB3's automatic reset). The task bookkeeping, per-sub-env task RNGs
    (for the task mixture), seeds, reset options and ``env_method("reset_task" | "get_task" | "sample_tasks")``
    are shared here.

    Tasks behave as in ``n_envs`` independent copies of ``env`` (and as in :class:`TaskDummyVecEnv`): a sub-env
    keeps its task across resets; if ``env`` has a task, every sub-env starts with it, otherwise sub-env ``i``
    draws its own at the first ``reset()`` from its task RNG (``seed + i`` after ``seed(seed)``, else an
    independent RNG spawned from ``env``'s). Until then ``get_tasks`` shows the task that reset will draw.

    :param env: the task distribution (its constants and spaces are shared by all sub-envs)
    :param n_envs: number of sub-envs
    """

    def __init__(self, env: TaskEnv, n_envs: int) -> None:
        n_envs = check_int("n_envs", n_envs)
        self.template_env = env
        super().__init__(n_envs, env.observation_space, env.action_space)
        self._task_rngs = env.spawn_task_rngs(self.num_envs)
        if env._task is not None:
            self._tasks: list[Task] = [env._task] * self.num_envs
            self._auto_task = np.zeros(self.num_envs, dtype=bool)
        else:
            # Placeholders drawn from copies of the RNGs: the first reset() draws the same tasks for real.
            self._tasks = [env._sample_task(copy.deepcopy(rng)) for rng in self._task_rngs]
            self._auto_task = np.ones(self.num_envs, dtype=bool)
        # which sub-envs hold a task they drew themselves: a reset with a seed draws it again (as TaskEnv.reset)
        self._drawn_task = self._auto_task.copy()
        self.render_mode = None
        #: sub-envs that stand still until the next reset() (set_idle_envs), or None
        self._idle: np.ndarray | None = None

    # --- subclass hooks --------------------------------------------------------------------------
    def _apply_tasks(self, indices: np.ndarray, tasks: list[Task]) -> None:
        """Store ``tasks[k]`` in the arrays of sub-env ``indices[k]`` (tasks are already validated)."""
        raise NotImplementedError

    def _reset_envs(self, indices: np.ndarray) -> None:
        """Put sub-envs ``indices`` in their initial state (of their current task)."""
        raise NotImplementedError

    def _observations(self) -> np.ndarray:
        """Observations of all sub-envs, shape ``(n_envs, *observation_space.shape)``."""
        raise NotImplementedError

    def _reset_rng(self, index: int, seed: int) -> None:
        """Reseed the initial-state RNG of one sub-env (override where initial states are random)."""

    def _get_init_rng_states(self) -> list[Any] | None:
        """States of the per-sub-env initial-state RNGs (override where initial states are random)."""
        return None

    def _set_init_rng_states(self, states: list[Any] | None) -> None:
        """Inverse of :meth:`_get_init_rng_states`."""

    def get_rng_states(self) -> dict[str, Any]:
        """Every RNG state of the sub-envs (task RNGs for the task mixture, initial-state RNGs), for checkpoints."""
        return {
            "task_rngs": [rng.bit_generator.state for rng in self._task_rngs],
            "init_rngs": self._get_init_rng_states(),
        }

    def set_idle_envs(self, idle: np.ndarray) -> None:
        """Let the sub-envs where ``idle`` is True stand still until the next ``reset()``: a sampler whose pass
        has ended their episode discards their steps anyway (one episode per sub-env and pass), so stepping them
        would only cost physics. An idle sub-env is not stepped, earns reward 0, never ends (so is never reset)
        and keeps its observation. VecEnvs that cannot skip sub-envs step them as usual; this base class's do not
        skip (its subclasses that simulate, such as the MuJoCo ones, do).

        :param idle: bool mask over the sub-envs
        """
        idle = check_idle_mask(idle, self.num_envs)
        self._idle = idle if self._skips_idle_envs and idle.any() else None

    #: whether :meth:`set_idle_envs` takes effect (subclasses whose step_wait honours ``self._idle`` set it)
    _skips_idle_envs: bool = False

    def use_task_rngs(self, task_rngs: Sequence[np.random.Generator]) -> None:
        """Draw tasks with ``task_rngs`` (one per sub-env) instead of the RNGs spawned at construction, e.g. a
        shard of a larger VecEnv taking the RNGs that VecEnv spawned for its sub-envs. The tasks of sub-envs that
        draw their own at the first reset are redrawn from them, as at construction."""
        if len(task_rngs) != self.num_envs:
            raise ValueError(f"{len(task_rngs)} task RNGs given, this VecEnv has {self.num_envs} sub-envs")
        self._task_rngs = list(task_rngs)
        auto = np.flatnonzero(self._auto_task)
        if len(auto):
            tasks = [self.template_env._sample_task(copy.deepcopy(self._task_rngs[i])) for i in auto.tolist()]
            self._apply_tasks(auto, tasks)
            for i, task in zip(auto.tolist(), tasks, strict=True):
                self._tasks[i] = task

    def get_task_state(self) -> dict[str, Any]:
        """The sub-envs' tasks and which of them still draw their own at the next reset (not rebuilt by reset)."""
        return {"tasks": list(self._tasks), "auto_task": self._auto_task.copy(), "drawn_task": self._drawn_task.copy()}

    def set_task_state(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`get_task_state`."""
        self.set_tasks(state["tasks"])
        self._auto_task[:] = state["auto_task"]
        self._drawn_task[:] = state.get("drawn_task", state["auto_task"])

    def set_pending_resets(self, seeds: Sequence[int | None], options: Sequence[dict[str, Any]]) -> None:
        """The seed and options each sub-env's next reset uses (what ``seed()`` / ``set_options()`` leave pending)."""
        if len(seeds) != self.num_envs or len(options) != self.num_envs:
            raise ValueError(f"{len(seeds)} seeds and {len(options)} options given for {self.num_envs} sub-envs")
        self._seeds = list(seeds)
        self._options = copy.deepcopy(list(options))

    def set_rng_states(self, states: dict[str, Any]) -> None:
        if len(states["task_rngs"]) != self.num_envs:
            raise ValueError(f"RNG states are for {len(states['task_rngs'])} sub-envs, this VecEnv has {self.num_envs}")
        for rng, state in zip(self._task_rngs, states["task_rngs"]):
            rng.bit_generator.state = state
        self._set_init_rng_states(states["init_rngs"])

    # --- tasks ------------------------------------------------------------------------------------
    def set_tasks(self, tasks: Sequence[Task], indices: VecEnvIndices = None) -> None:
        """Give sub-env ``indices[k]`` the task ``tasks[k]``; all tasks are validated before any is applied."""
        idx = np.asarray(checked_indices(self, indices), dtype=np.int64)
        tasks = as_task_list(tasks, self.template_env.task_type, len(idx), f"{type(self).__name__}.set_tasks")
        tasks = [self.template_env.validate_task(t) for t in tasks]
        self._apply_tasks(idx, tasks)
        for i, task in zip(idx.tolist(), tasks, strict=True):
            self._tasks[i] = task
        self._auto_task[idx] = False
        self._drawn_task[idx] = False

    def get_tasks(self, indices: VecEnvIndices = None) -> list[Task]:
        """The task of each sub-env in ``indices`` (all by default)."""
        return [self._tasks[i] for i in checked_indices(self, indices)]

    def sample_task_batch(self, n: int) -> list[Task]:
        """Draw ``n`` tasks with the task RNG of sub-env 0."""
        return self._sample_with(0, n)

    def _sample_with(self, index: int, n: int) -> list[Task]:
        n = check_int("sample_tasks: n", n)
        return [self.template_env._sample_task(self._task_rngs[index]) for _ in range(n)]

    # --- VecEnv API -------------------------------------------------------------------------------
    def reset(self) -> VecEnvObs:
        """Reset every sub-env, applying the seeds and options set by ``seed()`` / ``set_options()`` first."""
        # Validate every sub-env's options before anything changes.
        parsed = [self.template_env.parse_reset_options(options or None) for options in self._options]
        # a sub-env reseeded while holding a task it drew itself draws it again (as a fresh sub-env would)
        redraw = np.array([seed is not None for seed in self._seeds], dtype=bool) & self._drawn_task
        for i, seed in enumerate(self._seeds):
            if seed is not None:
                self._task_rngs[i] = TaskEnv._make_task_rng(seed)
                self._reset_rng(i, seed)
        for i, (task, sample) in enumerate(parsed):
            if task is not None:
                self.set_tasks([task], indices=[i])
            elif sample or self.template_env.sample_task_on_reset or self._auto_task[i] or redraw[i]:
                self.set_tasks(self._sample_with(i, 1), indices=[i])
                self._drawn_task[i] = True
        self._reset_seeds()
        self._reset_options()
        self._idle = None
        self._reset_envs(np.arange(self.num_envs))
        self.reset_infos = self._reset_infos()
        return self._observations()

    def _reset_infos(self) -> list[dict[str, Any]]:
        """Each sub-env's reset info, as the single env's ``reset`` returns it (here: its task)."""
        return [{"task": task} for task in self._tasks]

    def _finish_step(
        self,
        obs: np.ndarray,
        rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        extra_info: dict[str, np.ndarray] | None = None,
    ) -> VecEnvStepReturn:
        """Build infos, then reset finished sub-envs in one batch (SB3's automatic reset).

        :param obs: observations after the step (before any reset)
        :param rewards: rewards of the step, shape ``(n_envs,)``
        :param terminated: whether each sub-env reached a terminal state
        :param truncated: whether each sub-env hit its time limit (and is not terminated)
        :param extra_info: per-sub-env values to put in the infos (one array per key)
        :return: SB3's ``(obs, rewards, dones, infos)``; the ``"task"`` info is the task of the step taken
        """
        dones = np.asarray(terminated | truncated, dtype=bool)
        done_idx = np.flatnonzero(dones)
        infos = PackedInfos(
            tasks=list(self._tasks),
            time_limit=np.asarray(truncated & ~terminated, dtype=bool),
            columns={key: np.asarray(value) for key, value in (extra_info or {}).items()},
            terminal_observations={i: obs[i].copy() for i in done_idx.tolist()},
        )
        if done_idx.size:
            if self.template_env.sample_task_on_reset:
                for i in done_idx.tolist():
                    self.set_tasks(self._sample_with(i, 1), indices=[i])
            self._reset_envs(done_idx)
            obs = self._observations()
        return obs, np.asarray(rewards, dtype=np.float32), dones, infos if self._pack_infos else infos.unpack()

    #: whether step_wait returns :class:`PackedInfos` instead of SB3's list of dicts (:meth:`step_packed`)
    _pack_infos: bool = False

    def step_packed(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, PackedInfos]:
        """``step(actions)`` with the infos as :class:`PackedInfos` (arrays, not one dict per sub-env): what a Ray
        shard sends to the learner, which unpacks them into the very dicts the local VecEnv returns."""
        self._pack_infos = True
        try:
            self.step_async(actions)
            obs, rewards, dones, infos = self.step_wait()
        finally:
            self._pack_infos = False
        return obs, rewards, dones, cast(PackedInfos, infos)

    def close(self) -> None:
        """Nothing to release (subclasses holding native resources override this)."""

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """``"task"`` per sub-env; any other attribute from the shared template env."""
        idx = checked_indices(self, indices)
        if attr_name == "task":
            return [self._tasks[i] for i in idx]
        return [getattr(self.template_env, attr_name)] * len(idx)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set a constant of the shared template env (only for all sub-envs at once)."""
        if len(checked_indices(self, indices)) != self.num_envs:
            raise ValueError(f"{type(self).__name__} shares its constants across sub-envs: set_attr needs all indices")
        setattr(self.template_env, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        """The task methods of the sub-envs: ``reset_task``, ``get_task``, ``sample_tasks``, ``validate_task``."""
        idx = checked_indices(self, indices)
        return task_env_method(
            self, method_name, method_args, method_kwargs, idx, lambda n: [self._sample_with(i, n) for i in idx]
        )

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """No sub-env is wrapped (there are no per-env objects)."""
        return [False] * len(checked_indices(self, indices))

    def get_images(self) -> Sequence[np.ndarray | None]:
        """No rendering."""
        return [None] * self.num_envs


def task_env_method(
    venv: Any,
    method_name: str,
    method_args: tuple,
    method_kwargs: dict[str, Any],
    idx: list[int],
    sample_tasks: Callable[[int], list[Any]],
) -> list[Any]:
    """``env_method`` of a VecEnv without per-env objects: the task methods ``reset_task``, ``get_task``,
    ``sample_tasks`` (drawn by ``sample_tasks(n)`` for the sub-envs ``idx``) and ``validate_task``."""
    if method_name == "reset_task":
        (task,) = method_args or (method_kwargs["task"],)
        venv.set_tasks([task] * len(idx), indices=idx)
        return [None] * len(idx)
    if method_name == "get_task":
        return venv.get_tasks(idx)
    if method_name == "sample_tasks":
        (n,) = method_args or (method_kwargs["n"],)
        return sample_tasks(check_int("sample_tasks: n", n))
    if method_name == "validate_task":
        (task,) = method_args or (method_kwargs["task"],)
        return [venv.template_env.validate_task(task) for _ in idx]
    raise NotImplementedError(
        f"{type(venv).__name__} steps its sub-envs as batches; env_method supports 'reset_task', 'get_task', "
        f"'sample_tasks' and 'validate_task', not {method_name!r}. Use make_task_vec_env(..., vec_env_cls='dummy') "
        "for per-env objects."
    )


def is_task_vec_env(venv: Any) -> bool:
    """Whether ``venv`` (possibly wrapped in VecEnvWrappers) has the ``set_tasks`` / ``get_tasks`` API."""
    has_api = callable(getattr(venv, "set_tasks", None)) and callable(getattr(venv, "get_tasks", None))
    return isinstance(venv, VecEnv) and has_api


def is_bookkeeping_wrapper(wrapper: gym.Wrapper) -> bool:
    """Whether a batched VecEnv of the distribution under ``wrapper`` behaves as if ``wrapper`` were there:
    gymnasium's bookkeeping wrappers (order enforcing, passive checker) and time limits no shorter than the
    distribution's own ``max_episode_steps``."""
    if isinstance(wrapper, gym.wrappers.TimeLimit):
        own_limit = getattr(wrapper.unwrapped, "max_episode_steps", None)
        return own_limit is not None and wrapper._max_episode_steps >= own_limit
    return isinstance(wrapper, (gym.wrappers.OrderEnforcing, gym.wrappers.PassiveEnvChecker))


def is_batchable(env: gym.Env) -> bool:
    """Whether a batched VecEnv of ``env.unwrapped`` behaves like ``env``: only bookkeeping wrappers around it, and
    no ``render_mode`` (the batched VecEnvs do not render; SB3's VecEnvs of copies of ``env`` do)."""
    if getattr(env.unwrapped, "render_mode", None) is not None:
        return False
    while isinstance(env, gym.Wrapper):
        if not is_bookkeeping_wrapper(env):
            return False
        env = env.env
    return True
