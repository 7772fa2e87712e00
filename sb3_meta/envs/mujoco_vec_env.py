"""MuJoCo task distributions: their shared single-env logic and the batched VecEnv that samples them.

:class:`MujocoTaskEnv` is the part shared by the Ant and HalfCheetah task distributions (which also subclass
gymnasium's ``AntEnv`` / ``HalfCheetahEnv`` for the model, observation, initial states and health check):
``step`` and ``reset`` with a task-dependent reward, a horizon, and pickling that keeps the task.

:class:`MujocoTaskVecEnv` steps ``n_envs`` sub-envs of one such distribution in ONE process on every core.
Its transitions are bitwise identical to those of the single env for the same task, seed and actions:
the physics runs the same MuJoCo calls on the same state, and the reward is the same vectorised function,
which the single env calls on a batch of one. Two backends:

- ``"threads"``: one ``MjData`` per sub-env, stepped by a thread pool (MuJoCo's Python bindings release the
  GIL in ``mj_step`` and ``mj_rnePostConstraint``). Needed whenever the contact forces ``cfrc_ext`` are
  observed or penalised (Ant's default), since only ``mj_rnePostConstraint`` computes them.
- ``"batch"``: :class:`mujoco.batch.Batch`, MuJoCo's native thread pool over per-simulation state rows.
  Faster per step, but it never runs ``mj_rnePostConstraint``, so it is only used when ``cfrc_ext`` is
  not needed (HalfCheetah; Ant with ``include_cfrc_ext_in_observation=False, contact_cost_weight=0``).
  ``mujoco.batch`` ships with MuJoCo >= 3.17; on older MuJoCo (the floor is 3.3) ``"auto"`` uses ``"threads"``.

Only MuJoCo calls that exist since 3.3 are made outside the ``"batch"`` backend (CI: ``.ci/mujoco_floor``).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

import mujoco
import numpy as np
from gymnasium import utils
from gymnasium.utils import seeding
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from sb3_meta.common.utils import check_int
from sb3_meta.envs.core import Task, TaskEnv, TaskT
from sb3_meta.envs.vec_env import BatchedTaskVecEnv, check_action, check_actions

__all__ = [
    "MUJOCO_BATCH_MIN_VERSION",
    "MujocoTaskEnv",
    "MujocoTaskVecEnv",
    "available_cores",
    "check_mujoco_arguments",
    "copy_mjdata",
    "mujoco_batch",
]

#: First MuJoCo release with the ``mujoco.batch`` module that the ``"batch"`` backend needs.
MUJOCO_BATCH_MIN_VERSION = "3.17"


def available_cores() -> int:
    """Number of CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@functools.cache
def mujoco_batch() -> ModuleType | None:
    """The ``mujoco.batch`` module, or None on a MuJoCo older than :data:`MUJOCO_BATCH_MIN_VERSION`.

    Imported here rather than at the top of the module, so that ``import sb3_meta`` works on every MuJoCo
    that setup.cfg accepts.
    """
    try:
        return importlib.import_module("mujoco.batch")
    except ImportError:
        return None


#: ``mjSTATE_INTEGRATION``: everything the next ``mj_step`` depends on (time, qpos, qvel, act, warm start,
#: controls, applied forces, mocap, eq_active, userdata, plugin state).
_INTEGRATION_STATE = int(mujoco.mjtState.mjSTATE_INTEGRATION)


def copy_mjdata(model: mujoco.MjModel, dst: mujoco.MjData, src: mujoco.MjData) -> None:
    """Copy the simulation ``src`` into ``dst`` (both of ``model``) so that ``dst`` continues exactly like ``src``.

    ``mujoco.mj_copyData`` is only bound in Python from MuJoCo 3.17 on; this uses calls that MuJoCo 3.3 has:
    ``mj_getState`` / ``mj_setState`` with the integration state (all the next step depends on), then every
    model-sized array of ``MjData`` (positions, contact forces ``cfrc_ext``, ... as the last step left them: they
    describe the state before that step's integration, so ``mj_forward`` would not reproduce them). Arrays sized
    by the current contacts / constraints (``contact``, ``efc_*``, when their sizes differ) are scratch that the
    next ``mj_forward`` recomputes from the state, and are not copied.

    :param model: the model of both simulations
    :param dst: the simulation overwritten
    :param src: the simulation copied
    """
    state = np.empty(mujoco.mj_stateSize(model, _INTEGRATION_STATE))
    mujoco.mj_getState(model, src, state, _INTEGRATION_STATE)
    mujoco.mj_setState(model, dst, state, _INTEGRATION_STATE)
    for name in dir(src):
        if name.startswith("_"):
            continue
        value = getattr(src, name)
        if not isinstance(value, np.ndarray):
            continue
        target = getattr(dst, name)
        if isinstance(target, np.ndarray) and target.flags.writeable and target.shape == value.shape:
            target[...] = value


def init_kwargs(local_vars: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments among ``locals()`` at the top of ``__init__`` (for ``EzPickle``)."""
    return {k: v for k, v in local_vars.items() if k not in ("self", "__class__")}


def check_mujoco_arguments(
    name: str, max_episode_steps: Any, frame_skip: Any, reset_noise_scale: Any, render_mode: Any, render_modes: Any
) -> None:
    """The constructor checks every MuJoCo task distribution shares: a clear ``ValueError`` before anything is built
    (gymnasium's own envs accept e.g. ``frame_skip=2.5`` and fail at the first step)."""
    check_int(f"{name}: max_episode_steps", max_episode_steps)
    check_int(f"{name}: frame_skip", frame_skip)
    if isinstance(reset_noise_scale, bool) or not isinstance(reset_noise_scale, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name}: reset_noise_scale must be a finite number >= 0, got {reset_noise_scale!r}")
    if not np.isfinite(reset_noise_scale) or reset_noise_scale < 0:
        raise ValueError(f"{name}: reset_noise_scale must be a finite number >= 0, got {reset_noise_scale!r}")
    if render_mode not in (None, *render_modes):
        raise ValueError(f"{name}: render_mode must be None or one of {list(render_modes)}, got {render_mode!r}")


@dataclasses.dataclass(frozen=True)
class VelocityTask(Task):
    """Base of goal-velocity tasks: the forward (x) velocity to run at, in m/s (a float)."""

    velocity: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()  # a list or an array arrives here as a tuple of floats
        velocity = self.velocity
        if isinstance(velocity, tuple):
            if len(velocity) != 1:
                raise ValueError(f"{type(self).__name__}.velocity must be one number, got {len(velocity)}: {velocity!r}")
            velocity = velocity[0]
        object.__setattr__(self, "velocity", float(velocity))


@dataclasses.dataclass(frozen=True)
class DirectionTask(Task):
    """Base of goal-direction tasks: run forward (``direction=1``) or backward (``direction=-1``) along x."""

    direction: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.direction not in (-1, 1):
            raise ValueError(f"{type(self).__name__}.direction must be 1 or -1, got {self.direction!r}")
        object.__setattr__(self, "direction", float(self.direction))


class MujocoTaskEnv(TaskEnv[TaskT]):
    """Shared part of the MuJoCo task distributions (mixed in before a gymnasium ``MujocoEnv`` subclass).

    Every task is one number (a goal velocity or a direction), read by :meth:`_task_goal`. The reward,
    observation and health check are written on batches (leading axis = sub-env) so that
    :class:`MujocoTaskVecEnv` computes exactly what the single env computes; the single env keeps
    gymnasium's own ``_get_obs``, ``reset_model`` and health check, and the equivalence tests compare them.

    Subclasses implement :meth:`_task_goal`, :meth:`_batch_reward`, :meth:`_batch_observation`,
    :meth:`_batch_healthy`, set ``velocity_body`` (body whose ``xpos`` x gives the forward velocity, or
    ``None`` for ``qpos[0]``), ``uses_contact_forces``, ``terminate_when_unhealthy`` and ``max_episode_steps``.
    """

    # provided by gymnasium's MujocoEnv side of the class
    model: mujoco.MjModel
    data: mujoco.MjData
    frame_skip: int
    init_qpos: np.ndarray
    init_qvel: np.ndarray
    _reset_noise_scale: float

    #: Body whose ``xpos[body, 0]`` displacement gives ``x_velocity`` (Ant-v5), or None for ``qpos[0]`` (HalfCheetah-v5).
    velocity_body: int | None = None
    #: Whether ``cfrc_ext`` is observed or penalised (then only the threaded backend can batch the env).
    uses_contact_forces: bool = False
    terminate_when_unhealthy: bool = False
    max_episode_steps: int = 200

    _goal: float = 0.0
    _elapsed: int = 0

    # --- what subclasses implement ---------------------------------------------------------------
    def _task_goal(self, task: TaskT) -> float:
        """The task's number (goal velocity or direction) as used by :meth:`_batch_reward`."""
        raise NotImplementedError

    def _batch_reward(
        self,
        x_velocity: np.ndarray,
        actions: np.ndarray,
        goals: np.ndarray,
        healthy: np.ndarray,
        cfrc_ext: np.ndarray | None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Rewards ``(n,)`` and reward components (info entries) of ``n`` transitions."""
        raise NotImplementedError

    def _batch_observation(self, qpos: np.ndarray, qvel: np.ndarray, cfrc_ext: np.ndarray | None) -> np.ndarray:
        """Vectorised ``_get_obs``: observations ``(n, obs_dim)``."""
        raise NotImplementedError

    def _batch_healthy(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """Vectorised health check ``(n,)`` bool (always True where the env never terminates)."""
        return np.ones(len(qpos), dtype=bool)

    def _batch_reset_info(self, qpos: np.ndarray) -> list[dict[str, Any]]:
        """gymnasium's ``_get_reset_info`` for each row of ``qpos``: what the single env's reset info holds besides
        its task (HalfCheetah's; the Ant's adds its y position and distance from the origin)."""
        return [{"x_position": row[0]} for row in qpos]

    def _single_healthy(self) -> bool:
        """Health of the single env's current state (gymnasium's ``is_healthy`` where it has one)."""
        return True

    # --- task API ---------------------------------------------------------------------------------
    def _apply_task(self, task: TaskT) -> None:
        self._goal = float(self._task_goal(task))

    def _x_position(self) -> float:
        if self.velocity_body is None:
            return float(self.data.qpos[0])
        return float(self.data.xpos[self.velocity_body, 0])

    # --- gymnasium API ----------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):  # type: ignore[override]
        observation, info = super().reset(seed=seed, options=options)
        self._elapsed = 0
        info["task"] = self._task
        return observation, info

    def step(self, action):  # type: ignore[override]
        actions = check_action(action, self.action_space)[None]  # ValueError before any change
        task = self.get_task()
        x_before = np.array([self._x_position()])
        self.do_simulation(actions[0], self.frame_skip)  # type: ignore[attr-defined]
        x_velocity = (np.array([self._x_position()]) - x_before) / self.dt  # type: ignore[attr-defined]
        observation = self._get_obs()  # type: ignore[attr-defined]
        healthy = bool(self._single_healthy())
        cfrc_ext = self.data.cfrc_ext[None] if self.uses_contact_forces else None
        rewards, components = self._batch_reward(x_velocity, actions, np.array([self._goal]), np.array([healthy]), cfrc_ext)
        terminated = self.terminate_when_unhealthy and not healthy
        self._elapsed += 1
        truncated = self._elapsed >= self.max_episode_steps and not terminated
        info: dict[str, Any] = {
            "task": task,
            "x_position": float(self.data.qpos[0]),
            "x_velocity": float(x_velocity[0]),
        }
        info.update({key: float(value[0]) for key, value in components.items()})
        if self.render_mode == "human":
            self.render()
        return observation, float(rewards[0]), terminated, truncated, info

    # --- pickling / deepcopy -----------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        # gymnasium rebuilds MuJoCo envs from their constructor arguments (EzPickle); the task, the RNGs and
        # the simulation state are carried on top, so that a copy continues exactly like the original.
        # Plain attributes (numbers, flags, strings) are carried too: those set after construction (e.g.
        # env.max_episode_steps = 50, whether the task was drawn at a reset) would otherwise be rebuilt as new.
        state = dict(utils.EzPickle.__getstate__(self))  # type: ignore[arg-type]
        plain = (bool, int, float, str, type(None))
        state["_sb3_meta_runtime"] = {
            "task": self._task,
            "task_rng": self._task_rng,
            "np_random": self._np_random,
            "sample_task_on_reset": self.sample_task_on_reset,
            "elapsed": self._elapsed,
            "data": self.data,
            "attributes": {k: v for k, v in vars(self).items() if type(v) in plain and k != "_task"},
        }
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        runtime = state.pop("_sb3_meta_runtime", None)
        utils.EzPickle.__setstate__(self, state)  # type: ignore[arg-type]
        if runtime is not None:
            self._task_rng = runtime["task_rng"]
            self._np_random = runtime["np_random"]
            self.sample_task_on_reset = runtime["sample_task_on_reset"]
            self._elapsed = runtime["elapsed"]
            if runtime["task"] is not None:
                self.reset_task(runtime["task"])
            for name, value in runtime.get("attributes", {}).items():
                setattr(self, name, value)
            copy_mjdata(self.model, self.data, runtime["data"])


class _ThreadedSimulations:
    """One ``MjData`` per sub-env, stepped on a thread pool; the same calls as gymnasium's ``MujocoEnv``.

    After every call, ``qpos``, ``qvel``, ``body_x`` (and ``cfrc_ext``) hold every sub-env's values.
    """

    def __init__(self, model: mujoco.MjModel, n: int, n_threads: int, contact_forces: bool, body: int | None) -> None:
        self.model = model
        self.datas = [mujoco.MjData(model) for _ in range(n)]
        self.qpos = np.zeros((n, model.nq))
        self.qvel = np.zeros((n, model.nv))
        self.cfrc_ext: np.ndarray | None = np.zeros((n, model.nbody, 6)) if contact_forces else None
        self.body_x = np.zeros(n)
        self._body = body
        # views of each MjData's arrays, made once (attribute access builds a new array every time)
        self._views = [(d, d.ctrl, d.qpos, d.qvel, d.cfrc_ext, d.xpos) for d in self.datas]
        self.n_threads = max(1, min(int(n_threads), n))
        self._pool = ThreadPoolExecutor(self.n_threads - 1, thread_name_prefix="mujoco") if self.n_threads > 1 else None

    def _gather(self, i: int) -> None:
        _, _, qpos, qvel, cfrc_ext, xpos = self._views[i]
        self.qpos[i] = qpos
        self.qvel[i] = qvel
        if self.cfrc_ext is not None:
            self.cfrc_ext[i] = cfrc_ext
        if self._body is not None:
            self.body_x[i] = xpos[self._body, 0]

    def _step_some(self, indices: Iterator[int], ctrl: np.ndarray, nstep: int) -> None:
        model, step, post = self.model, mujoco.mj_step, mujoco.mj_rnePostConstraint
        for i in indices:  # shared by the threads: each takes the next sub-env (CPython's range iterator is atomic)
            data, data_ctrl = self._views[i][:2]
            data_ctrl[:] = ctrl[i]
            step(model, data, nstep)  # releases the GIL
            post(model, data)  # as gymnasium's MujocoEnv._step_mujoco_simulation
            self._gather(i)

    def step(self, ctrl: np.ndarray, nstep: int, ids: np.ndarray | None = None) -> None:
        """Step the sub-envs ``ids`` (all by default); the others keep their state."""
        indices = iter(range(len(self.datas)) if ids is None else ids.tolist())
        if self._pool is None:
            self._step_some(indices, ctrl, nstep)
            return
        futures = [self._pool.submit(self._step_some, indices, ctrl, nstep) for _ in range(self.n_threads - 1)]
        try:
            self._step_some(indices, ctrl, nstep)  # the calling thread works too
        finally:
            errors = [f.exception() for f in futures]  # waits for every worker before anything is raised
        for error in errors:
            if error is not None:
                raise error

    def reset(self, ids: np.ndarray, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """``mj_resetData``, then gymnasium's ``set_state(qpos, qvel)`` (which runs ``mj_forward``)."""
        for k, i in enumerate(ids.tolist()):
            data, _, data_qpos, data_qvel, _, _ = self._views[i]
            mujoco.mj_resetData(self.model, data)
            data_qpos[:] = qpos[k]
            data_qvel[:] = qvel[k]
            mujoco.mj_forward(self.model, data)
            self._gather(i)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


class _BatchedSimulations:
    """:class:`mujoco.batch.Batch` (native thread pool, bit-identical to one ``MjData`` per simulation).

    It never runs ``mj_rnePostConstraint``: only for envs that do not need ``cfrc_ext``.
    """

    cfrc_ext = None

    def __init__(self, model: mujoco.MjModel, n: int, n_threads: int, body: int | None) -> None:
        batch = mujoco_batch()
        assert batch is not None, "MujocoTaskVecEnv checks that mujoco.batch exists before choosing this backend"
        self.batch = batch.Batch(model, n, nthread=max(1, min(int(n_threads), n)))
        self.n_threads = self.batch.nthread
        self.qpos = self.batch.bind("qpos")  # live views of the state rows
        self.qvel = self.batch.bind("qvel")
        self._ctrl = self.batch.bind("ctrl")
        self._xpos = self.batch.bind("xpos") if body is not None else None
        self._body = body

    @property
    def body_x(self) -> np.ndarray:
        if self._xpos is None:
            return np.zeros(len(self.qpos))
        return self._xpos[:, self._body, 0].copy()

    def step(self, ctrl: np.ndarray, nstep: int, ids: np.ndarray | None = None) -> None:
        """Step the simulations ``ids`` (all by default); the others keep their state."""
        self._ctrl[...] = ctrl
        self.batch.step(ids, nstep=nstep)

    def reset(self, ids: np.ndarray, qpos: np.ndarray, qvel: np.ndarray) -> None:
        self.batch.reset(ids, stage=mujoco.mjtStage.mjSTAGE_NONE)
        self.qpos[ids] = qpos
        self.qvel[ids] = qvel
        self.batch.forward(ids)  # mj_forward, as gymnasium's set_state

    def close(self) -> None:
        pass


class MujocoTaskVecEnv(BatchedTaskVecEnv):
    """``n_envs`` sub-envs of one MuJoCo task distribution, stepped together in this process on every core.

    Transitions (observation, reward, terminated, truncated, ``x_velocity`` and the reward components) are
    bitwise identical to those of the single env for the same task, seed and actions: after ``seed(s)``, sub-env
    ``i`` runs like the single env after ``reset(seed=s + i)`` (SB3's convention), each sub-env drawing its
    initial-state noise from its own RNG. Observations and rewards are computed with numpy across sub-envs;
    unhealthy sub-envs terminate and, like finished episodes, reset themselves (SB3 convention). Rewards are
    float32 (as in SB3's DummyVecEnv); the float64 reward components are in the infos.

    :param env: the task distribution (a :class:`MujocoTaskEnv`; its model and constants are shared)
    :param n_envs: number of sub-envs
    :param backend: ``"auto"`` (``"batch"`` unless the env needs the contact forces ``cfrc_ext`` or MuJoCo is
        older than 3.17, then ``"threads"``), ``"threads"`` (one ``MjData`` per sub-env on a thread pool) or
        ``"batch"`` (:class:`mujoco.batch.Batch`; refused when ``cfrc_ext`` is needed, as it is never computed
        there, and on MuJoCo < 3.17, which has no ``mujoco.batch``)
    :param n_threads: threads (default: every core this process may use)
    """

    _skips_idle_envs = True  # physics is the cost: a finished sub-env is not stepped (set_idle_envs)

    def __init__(self, env: MujocoTaskEnv, n_envs: int, backend: str = "auto", n_threads: int | None = None) -> None:
        if not isinstance(env, MujocoTaskEnv):
            raise ValueError(f"MujocoTaskVecEnv needs a MujocoTaskEnv, got {type(env).__name__}")
        if backend not in ("auto", "threads", "batch"):
            raise ValueError(f"backend must be 'auto', 'threads' or 'batch', got {backend!r}")
        if n_threads is None:
            n_threads = available_cores()
        n_threads = check_int("n_threads", n_threads)
        super().__init__(env, n_envs)
        if backend == "auto":
            backend = "threads" if env.uses_contact_forces or mujoco_batch() is None else "batch"
        if backend == "batch" and env.uses_contact_forces:
            raise ValueError(
                f"{type(env).__name__} observes or penalises the contact forces cfrc_ext, which mujoco.batch never "
                "computes (no mj_rnePostConstraint): use backend='threads'"
            )
        if backend == "batch" and mujoco_batch() is None:
            raise ValueError(
                f"backend='batch' needs mujoco.batch, which MuJoCo {mujoco.__version__} lacks: install "
                f"mujoco>={MUJOCO_BATCH_MIN_VERSION} (pip install 'mujoco>={MUJOCO_BATCH_MIN_VERSION}'), or use "
                "backend='threads' (or 'auto', which picks it on this MuJoCo)"
            )
        self.backend = backend
        n = self.num_envs
        model = env.model
        self._sims: _ThreadedSimulations | _BatchedSimulations
        if backend == "threads":
            self._sims = _ThreadedSimulations(model, n, int(n_threads), env.uses_contact_forces, env.velocity_body)
        else:
            self._sims = _BatchedSimulations(model, n, int(n_threads), env.velocity_body)
        self.n_threads = self._sims.n_threads
        self._goals = np.zeros(n)
        self._apply_tasks(np.arange(n), self._tasks)
        # Initial-state RNGs as make_task_vec_env's DummyVecEnv of copies gives them: derived from each sub-env's
        # task RNG when the env was already seeded (so that the VecEnv is reproducible from it), else fresh entropy
        seeded = getattr(env, "_np_random", None) is not None
        self._np_randoms = [
            copy.deepcopy(rng).spawn(1)[0] if seeded else seeding.np_random(None)[0] for rng in self._task_rngs
        ]
        self._elapsed = np.zeros(n, dtype=np.int64)
        self._actions = np.zeros((n, *self.action_space.shape))  # type: ignore[misc]  # Space.shape is Optional; a Box's is set
        self._x = np.zeros(n)
        self._reset_envs(np.arange(n))  # a valid state even if stepped before reset()

    # --- BatchedTaskVecEnv hooks --------------------------------------------------------------------
    def _apply_tasks(self, indices: np.ndarray, tasks: list[Task]) -> None:
        env: MujocoTaskEnv = self.template_env  # type: ignore[assignment]
        self._goals[indices] = [env._task_goal(task) for task in tasks]

    def _reset_rng(self, index: int, seed: int) -> None:
        # the initial-state RNG that gymnasium's Env.reset(seed=seed) makes
        self._np_randoms[index] = seeding.np_random(seed)[0]

    def _get_init_rng_states(self) -> list[Any]:
        return [rng.bit_generator.state for rng in self._np_randoms]

    def _set_init_rng_states(self, states: list[Any] | None) -> None:
        if states is None:
            return
        if len(states) != self.num_envs:
            raise ValueError(f"Initial-state RNG states are for {len(states)} sub-envs, this VecEnv has {self.num_envs}")
        for rng, state in zip(self._np_randoms, states, strict=True):
            rng.bit_generator.state = state

    def _reset_envs(self, indices: np.ndarray) -> None:
        env: MujocoTaskEnv = self.template_env  # type: ignore[assignment]
        model = env.model
        scale = env._reset_noise_scale
        # gymnasium's AntEnv / HalfCheetahEnv.reset_model, with each sub-env's own RNG, in the same draw order
        qpos_noise = np.empty((len(indices), model.nq))
        qvel_noise = np.empty((len(indices), model.nv))
        for k, i in enumerate(indices.tolist()):
            rng = self._np_randoms[i]
            qpos_noise[k] = rng.uniform(low=-scale, high=scale, size=model.nq)
            qvel_noise[k] = rng.standard_normal(model.nv)
        qpos = env.init_qpos + qpos_noise
        qvel = env.init_qvel + scale * qvel_noise
        self._sims.reset(indices, qpos, qvel)
        self._elapsed[indices] = 0
        self._x[indices] = self._x_positions()[indices]

    def _x_positions(self) -> np.ndarray:
        env: MujocoTaskEnv = self.template_env  # type: ignore[assignment]
        if env.velocity_body is None:
            return np.array(self._sims.qpos[:, 0])
        return self._sims.body_x.copy()

    def _observations(self) -> np.ndarray:
        env: MujocoTaskEnv = self.template_env  # type: ignore[assignment]
        return env._batch_observation(self._sims.qpos, self._sims.qvel, self._sims.cfrc_ext)

    def _reset_infos(self) -> list[dict[str, Any]]:
        env: MujocoTaskEnv = self.template_env  # type: ignore[assignment]
        rows = env._batch_reset_info(self._sims.qpos)
        return [{**row, "task": task} for row, task in zip(rows, self._tasks, strict=True)]

    # --- VecEnv API -------------------------------------------------------------------------------
    def step_async(self, actions: np.ndarray) -> None:
        self._actions = check_actions(actions, self.action_space, self.num_envs)

    def step_wait(self) -> VecEnvStepReturn:
        env: MujocoTaskEnv = self.template_env  # type: ignore[assignment]
        idle = self._idle
        self._sims.step(self._actions, env.frame_skip, None if idle is None else np.flatnonzero(~idle))
        x_after = self._x_positions()
        x_velocity = (x_after - self._x) / env.dt  # type: ignore[attr-defined]  # read each step: set_attr may change frame_skip
        self._x = x_after
        qpos, qvel = self._sims.qpos, self._sims.qvel
        observations = env._batch_observation(qpos, qvel, self._sims.cfrc_ext)
        healthy = env._batch_healthy(qpos, qvel)
        rewards, components = env._batch_reward(x_velocity, self._actions, self._goals, healthy, self._sims.cfrc_ext)
        terminated = ~healthy if env.terminate_when_unhealthy else np.zeros(self.num_envs, dtype=bool)
        if idle is None:
            self._elapsed += 1
        else:  # idle sub-envs stood still: no reward, no end, no reset, no time
            rewards[idle] = 0.0
            terminated[idle] = False
            self._elapsed[~idle] += 1
        truncated = (self._elapsed >= env.max_episode_steps) & ~terminated
        extra_info = {"x_position": np.array(qpos[:, 0]), "x_velocity": x_velocity, **components}
        return self._finish_step(observations, rewards, terminated, truncated, extra_info=extra_info)

    def close(self) -> None:
        self._sims.close()
