"""Sampling across machines: a task VecEnv whose sub-envs are split into shards on Ray actors.

:class:`RayTaskVecEnv` holds ``n_envs`` sub-envs of one task distribution as ``n_workers`` contiguous shards
(shard ``k`` is the range ``[a_k, b_k)`` of sub-envs), each on a Ray actor that steps its shard with the
distribution's own batched VecEnv (:class:`~sb3_meta.envs.point_mass.PointMassVecEnv`,
:class:`~sb3_meta.envs.mujoco_vec_env.MujocoTaskVecEnv`...). The policy stays in the learner: every step sends
each actor its slice of the actions in one call and gathers all shards with one ``ray.get``; only numpy arrays
(and the infos) travel.

Same seed, same result: shard ``[a, b)`` gets the task RNGs, seeds (``seed + a`` ...) and reset options that the
local batched VecEnv gives its sub-envs ``a ... b - 1``, so transitions are bitwise those of the local VecEnv.

Faults: at every ``reset()`` (the start of a sampling pass) each actor returns a snapshot of its RNG and task
state, and the learner logs every call that changes an actor's state since then. When an actor dies (node lost,
process killed), a new actor is started, restores the snapshot and replays the log (the physics is
deterministic, so the replay is bitwise), and the pass continues as if nothing had happened.

Ray is an optional dependency (``pip install "sb3_meta[ray]"``): it is imported inside the functions of this module
only, so that ``import sb3_meta`` never needs it.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import os
import socket
import time
import warnings
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from sb3_meta.envs.core import Task, TaskEnv, as_task_list
from sb3_meta.envs.vec_env import (
    BatchedTaskVecEnv,
    PackedInfos,
    VecEnvLostError,
    check_actions,
    check_idle_mask,
    checked_indices,
    get_task_env,
    is_batchable,
    task_env_method,
)

__all__ = ["RayTaskVecEnv", "ShardLostError", "connect_ray", "import_ray", "make_ray_task_vec_env", "shard_ranges"]

RAY_INSTALL_HINT = 'pip install "sb3_meta[ray]" (or pip install "ray[default]>=2.9")'

#: Options that RayTaskVecEnv sets itself: it restarts lost actors (Ray's own restarts would lose the shard's
#: state), starts several actors of one class (a name would clash), and needs each shard's calls run one at a
#: time in the order sent (the replay log is that order).
_RESERVED_ACTOR_OPTIONS = (
    "max_restarts",
    "max_task_retries",
    "name",
    "get_if_exists",
    "lifetime",
    "max_concurrency",
    "allow_out_of_order_execution",
)


class ShardLostError(VecEnvLostError):
    """A shard's Ray actor died and no new actor could take over its sub-envs (nothing else was changed)."""


def import_ray() -> Any:
    """Import Ray, with an error that says how to install it."""
    try:
        import ray
    except ImportError as e:
        raise ImportError(
            f"Sampling on Ray (vec_env_cls='ray', RayTaskVecEnv) needs Ray, an optional extra of sb3_meta: {RAY_INSTALL_HINT}"
        ) from e
    return ray


def shard_ranges(n_envs: int, n_shards: int) -> list[tuple[int, int]]:
    """Contiguous ranges ``[a, b)`` of sub-envs, as equal as possible (the first ``n_envs % n_shards`` get one more).

    :param n_envs: number of sub-envs
    :param n_shards: number of shards (1 <= n_shards <= n_envs)
    :return: ``n_shards`` pairs ``(a, b)`` covering ``range(n_envs)`` in order
    """
    if not 1 <= n_shards <= n_envs:
        raise ValueError(f"Need 1 <= shards <= sub-envs, got {n_shards} shards for {n_envs} sub-envs")
    base, extra = divmod(n_envs, n_shards)
    ranges, start = [], 0
    for k in range(n_shards):
        stop = start + base + (1 if k < extra else 0)
        ranges.append((start, stop))
        start = stop
    return ranges


def _host_port(address: str) -> tuple[str, int] | None:
    """``(ip, port)`` of a ``"host:port"`` address (host resolved), or None if it is not of that form."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    try:
        host = socket.gethostbyname(host)
    except OSError:
        pass
    return host, int(port)


def connect_ray(address: str | None = None, connect_timeout_s: float = 10.0, local_num_cpus: int | None = None) -> bool:
    """Use the Ray cluster this process is connected to, else connect to ``address``, else start a local one.

    :param address: ``None`` (the current connection, else ``RAY_ADDRESS``, else the cluster started on this machine
        with ``ray start``, else a new local Ray), ``"auto"`` (the same, but never a new local Ray), ``"local"``
        (a new local Ray), ``"host:port"`` of a head node, or ``"ray://host:port"``
    :param connect_timeout_s: how long to wait for a TCP answer from ``"host:port"`` before giving up
    :param local_num_cpus: the logical CPUs of a new local Ray (None: Ray's default, the machine's cores); ignored
        when an existing cluster is used
    :return: whether a new local Ray was started with ``local_num_cpus`` CPUs
    """
    ray = import_ray()
    if ray.is_initialized():
        wanted = _host_port(address) if address is not None and not address.startswith("ray://") else None
        if wanted is not None:
            current_address = ray.get_runtime_context().gcs_address
            current = _host_port(current_address)
            if current is not None and current != wanted:
                raise ValueError(
                    f"This process is already connected to the Ray cluster at {current_address}, not {address!r}: "
                    "pass address=None to use the current connection, or call ray.shutdown() first"
                )
        return False
    if address is not None and address not in ("auto", "local") and not address.startswith("ray://"):
        target = _host_port(address)
        if target is None:
            raise ValueError(f"Expected a Ray address 'host:port', 'auto', 'local' or 'ray://host:port', got {address!r}")
        try:
            socket.create_connection(target, timeout=connect_timeout_s).close()
        except OSError as e:
            raise ConnectionError(
                f"No Ray cluster reachable at {address!r} ({e}). Start its head node there with `ray start --head "
                f"--port={target[1]}`, check that the port is open from this machine, or pass address=None to start "
                "a local Ray"
            ) from e
    try:
        if local_num_cpus is not None:
            try:
                ray.init(address=address, num_cpus=local_num_cpus, ignore_reinit_error=True)
                return True
            except ValueError:  # "when connecting to an existing cluster, num_cpus must not be provided": use it as it is
                pass
        ray.init(address=address, ignore_reinit_error=True)
        return False
    except ConnectionError as e:
        raise ConnectionError(
            f"Could not connect to a Ray cluster at {address!r}: {e}. Start one with `ray start --head` (and "
            "`ray start --address=<head>:6379` on the other machines), or pass address=None to start a local Ray"
        ) from e


class _ShardWorker:
    """Body of a Ray actor: one batched task VecEnv for the sub-envs ``[start, start + n_envs)``.

    Every method that changes the shard's state is replayable: :meth:`replay` restores a snapshot and re-runs
    a list of ``(method, args)`` calls, which is how a restarted actor rebuilds a lost one.

    :param env: the task distribution (a fresh copy, unpickled in this process)
    :param start: index of the shard's first sub-env in the whole VecEnv (for messages)
    :param n_envs: number of sub-envs of the shard
    :param task_rngs: the shard's task RNGs, as the local batched VecEnv spawns them for these sub-envs
    :param shard_kwargs: extra arguments of the batched VecEnv class (e.g. ``backend``, ``n_threads``)
    :param attr_overrides: ``set_attr`` calls to re-apply, in order (for a restarted actor)
    """

    def __init__(
        self,
        env: TaskEnv,
        start: int,
        n_envs: int,
        task_rngs: list[np.random.Generator],
        shard_kwargs: dict[str, Any],
        attr_overrides: list[tuple[str, Any]],
    ) -> None:
        self.start = start
        self.venv: BatchedTaskVecEnv = type(env).batched_vec_env_cls(env, n_envs, **shard_kwargs)
        # The local VecEnv spawns one task RNG per sub-env from the distribution's; the shard takes the same ones
        # (spawned in the learner), and redraws its placeholder tasks from them as the local VecEnv draws them.
        self.venv.use_task_rngs(task_rngs)
        for name, value in attr_overrides:
            self.venv.set_attr(name, value)
        #: the tasks of the last step's infos as sent to the learner (None: nothing sent yet, by this actor)
        self._sent_tasks: list[Task] | None = None

    # --- state that is not rebuilt by a reset: RNGs and tasks -----------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {"rngs": self.venv.get_rng_states(), "tasks": self.venv.get_task_state()}

    def restore(self, snapshot: dict[str, Any]) -> None:
        self.venv.set_rng_states(snapshot["rngs"])
        self.venv.set_task_state(snapshot["tasks"])

    def hello(self) -> dict[str, Any]:
        """Where the actor runs, and its state (the learner's first snapshot)."""
        import ray

        return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(), "snapshot": self.snapshot()}

    def replay(self, snapshot: dict[str, Any], calls: list[tuple[str, tuple]]) -> Any:
        """Restore ``snapshot``, run ``calls`` in order and return the result of the last one."""
        self.restore(snapshot)
        result = None
        for name, args in calls:
            result = getattr(self, name)(*args)
        return result

    # --- VecEnv calls ---------------------------------------------------------------------------------------
    def reset(self, seeds: list[int | None], options: list[dict[str, Any]]) -> tuple[dict[str, Any], VecEnvObs, list[dict]]:
        """The state before the reset (the learner's snapshot for this pass), then the reset's obs and infos."""
        before = self.snapshot()
        self.venv.set_pending_resets(seeds, options)
        obs = self.venv.reset()
        return before, obs, self.venv.reset_infos

    def step(
        self, actions: np.ndarray, idle: np.ndarray | None = None, send_all_tasks: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, PackedInfos, dict[int, Task]]:
        """One step of the shard: obs, rewards, dones, the infos as arrays (not one pickled dict per sub-env)
        without their tasks, and the tasks that changed since the last step this actor answered (all of them with
        ``send_all_tasks`` or for this actor's first step; :func:`apply_task_changes` puts them back)."""
        if idle is not None:
            self.venv.set_idle_envs(idle)
        obs, rewards, dones, infos = self.venv.step_packed(actions)
        # A sub-env's task changes only with set_tasks / reset_task, so per step there is nothing to send; pickling
        # every sub-env's task object each step was half of HalfCheetahVel's round trip.
        tasks, sent = infos.tasks, None if send_all_tasks else self._sent_tasks
        self._sent_tasks = list(tasks)
        changes = dict(enumerate(tasks)) if sent is None else {i: t for i, (t, s) in enumerate(zip(tasks, sent)) if t is not s}
        return obs, rewards, dones, dataclasses.replace(infos, tasks=[]), changes

    def set_tasks(self, tasks: list[Task], indices: list[int]) -> None:
        self.venv.set_tasks(tasks, indices=indices)

    def get_tasks(self, indices: list[int]) -> list[Task]:
        return self.venv.get_tasks(indices=indices)

    def sample_tasks(self, indices: list[int], n: int) -> list[list[Task]]:
        return self.venv.env_method("sample_tasks", n, indices=indices)

    def set_attr(self, name: str, value: Any) -> None:
        self.venv.set_attr(name, value)

    def get_rng_states(self) -> dict[str, Any]:
        return self.venv.get_rng_states()

    def set_rng_states(self, states: dict[str, Any]) -> None:
        self.venv.set_rng_states(states)

    def close(self) -> None:
        self.venv.close()


def apply_task_changes(known: list[Task] | None, infos: PackedInfos, changes: dict[int, Task]) -> PackedInfos:
    """A shard step's infos with their tasks back: ``known`` (the tasks of the shard's previous step as the learner
    has them; None: unknown, then ``changes`` covers every sub-env) updated by ``changes``."""
    if known is None and len(changes) != len(infos.time_limit):
        raise RuntimeError(f"A shard sent {len(changes)} of its {len(infos.time_limit)} tasks to a learner that knew none")
    tasks: list[Any] = list(known) if known is not None else [None] * len(infos.time_limit)
    for i, task in changes.items():
        tasks[i] = task
    return dataclasses.replace(infos, tasks=tasks)


def join_shard_steps(
    results: Sequence[tuple], known_tasks: Sequence[list[Task] | None]
) -> tuple[VecEnvStepReturn, list[list[Task]]]:
    """The shards' step replies (obs, rewards, dones, infos without tasks, task changes) as one VecEnv step, and the
    tasks of each shard's infos (what the learner knows for the next step).

    :param results: the replies of :meth:`_ShardWorker.step`, in shard order
    :param known_tasks: per shard, the tasks of its previous step's infos (None: unknown)
    """
    packed = [apply_task_changes(known, r[3], r[4]) for r, known in zip(results, known_tasks, strict=True)]
    obs = np.concatenate([r[0] for r in results])
    rewards = np.concatenate([r[1] for r in results])
    dones = np.concatenate([r[2] for r in results])
    infos = [info for p in packed for info in p.unpack()]
    return (obs, rewards, dones, infos), [p.tasks for p in packed]


_REMOTE_WORKER_CLASS: Any = None


def _remote_worker_class() -> Any:
    """The Ray actor class of :class:`_ShardWorker` (made once: ``ray.remote`` needs Ray)."""
    global _REMOTE_WORKER_CLASS
    if _REMOTE_WORKER_CLASS is None:
        _REMOTE_WORKER_CLASS = import_ray().remote(_ShardWorker)
    return _REMOTE_WORKER_CLASS


class RayTaskVecEnv(VecEnv):
    """``n_envs`` sub-envs of one task distribution, stepped as ``n_workers`` shards on Ray actors.

    Shard ``k`` holds the contiguous sub-envs ``[a_k, b_k)`` (:func:`shard_ranges`; with ``K`` tasks x ``E``
    episodes, sub-env ``k * E + e`` holds task ``k``) in one batched task VecEnv of the distribution on its own
    actor. ``step_async`` sends each actor its slice of actions in one call; ``step_wait`` gathers every shard
    with one ``ray.get`` and concatenates. Transitions, infos and RNG states equal those of the local batched
    VecEnv (``make_task_vec_env(env, n_envs)``) bit for bit, for the same seed, tasks and actions; the RNG states
    (``get_rng_states`` / ``set_rng_states``) have the local VecEnv's format, so checkpoints move between the two.

    A shard whose actor dies is rebuilt on a new actor from the snapshot taken at the last ``reset()`` and the
    calls logged since (see the module docstring); if no actor can be had within ``restart_timeout_s`` (or after
    ``restart_attempts`` tries), :class:`ShardLostError` is raised and nothing else changes.

    :param env: the task distribution (it must have a batched VecEnv, ``batched_vec_env_cls``, and be picklable);
        it is copied, never stepped
    :param n_envs: number of sub-envs
    :param n_workers: number of actors (shards), 1 <= n_workers <= n_envs; default: as many as the cluster has
        free CPUs for (``num_cpus`` each, at most ``n_envs``; if none is free, as many as it has CPUs for, and they
        wait), or one per bundle of ``placement_group``
    :param actor_options: options of the actors: ``"num_cpus"`` per actor (default 1; it is also the number of
        threads of a MuJoCo shard unless ``shard_kwargs`` sets ``n_threads``), ``"scheduling_strategy"`` (e.g.
        ``"SPREAD"``: one actor per node while nodes last), ``"placement_group"`` (a Ray placement group: actor
        ``k`` goes to bundle ``k`` modulo the number of bundles), and anything else ``ActorClass.options`` takes
        (``resources``, ``memory``, ``runtime_env``...) except restart options and names, which this class sets
    :param address: Ray cluster to use when this process is not connected yet (see :func:`connect_ray`);
        default: ``RAY_ADDRESS``, else a new local Ray
    :param shard_kwargs: extra constructor arguments of the batched VecEnv of each shard (e.g. ``backend``)
    :param max_replay_steps: the most steps logged per shard between two resets; past it the shard can no longer
        be rebuilt until the next reset (bounds the log of a VecEnv that is never reset, e.g. under SB3's PPO)
    :param restart_attempts: new actors tried, one after the other, for one lost actor
    :param start_timeout_s: how long to wait for the actors to start (scheduling, imports, env construction)
    :param restart_timeout_s: how long to wait for a new actor to start and replay the shard's pass
    """

    def __init__(
        self,
        env: TaskEnv,
        n_envs: int,
        n_workers: int | None = None,
        actor_options: dict[str, Any] | None = None,
        address: str | None = None,
        shard_kwargs: dict[str, Any] | None = None,
        max_replay_steps: int = 1000,
        restart_attempts: int = 3,
        start_timeout_s: float = 120.0,
        restart_timeout_s: float = 120.0,
    ) -> None:
        ray = import_ray()
        if isinstance(n_envs, bool) or not isinstance(n_envs, (int, np.integer)) or n_envs < 1:
            raise ValueError(f"n_envs must be an integer >= 1, got {n_envs!r}")
        n_envs = int(n_envs)
        if n_workers is not None:
            if isinstance(n_workers, bool) or not isinstance(n_workers, (int, np.integer)) or n_workers < 1:
                raise ValueError(f"ray_workers (n_workers) must be an integer >= 1, got {n_workers!r}")
            if n_workers > n_envs:
                raise ValueError(
                    f"ray_workers={n_workers} is more than the {n_envs} sub-envs: every actor needs at least one "
                    f"sub-env; use ray_workers <= {n_envs}"
                )
        for name, value in (("max_replay_steps", max_replay_steps), ("restart_attempts", restart_attempts)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        base = get_task_env(env)
        if isinstance(env, gym.Wrapper):
            raise ValueError(
                f"RayTaskVecEnv takes the task distribution itself, got it wrapped in {type(env).__name__}: "
                "use make_task_vec_env(env, n_envs, vec_env_cls='ray'), which refuses wrappers a batched VecEnv would drop"
            )
        batched_cls = getattr(base, "batched_vec_env_cls", None)
        if batched_cls is None or not issubclass(batched_cls, BatchedTaskVecEnv):
            raise ValueError(
                f"{type(base).__name__} has no batched VecEnv (batched_vec_env_cls) for the actors to run: RayTaskVecEnv "
                "shards the batched VecEnvs of sb3_meta's distributions (PointMass, Ant, HalfCheetah)"
            )
        self._actor_options, self._placement_group, num_cpus = self._check_actor_options(ray, actor_options)
        shard_kwargs = dict(shard_kwargs or {})
        if "n_threads" in inspect.signature(batched_cls).parameters and "n_threads" not in shard_kwargs:
            shard_kwargs["n_threads"] = max(1, int(num_cpus))  # a shard uses the cores its actor reserved, not the node's
        # Up front, before anything starts: the env and the shard arguments travel to the actors by pickle.
        for what, payload in (("env", base), ("shard_kwargs", shard_kwargs)):
            try:
                ray.cloudpickle.dumps(payload)
            except Exception as e:
                raise ValueError(
                    f"The {what} ({type(payload).__name__}) cannot be sent to Ray actors: it does not pickle "
                    f"({type(e).__name__}: {e}). Every attribute must be picklable with cloudpickle: make unpicklable "
                    "members (locks, open files, sockets, native handles) lazily created, or give the class "
                    "__getstate__/__setstate__ that rebuild them"
                ) from e

        self.template_env: TaskEnv = copy.deepcopy(base)
        super().__init__(n_envs, self.template_env.observation_space, self.template_env.action_space)
        self.render_mode = None
        # The task RNGs the local batched VecEnv spawns from its copy of the distribution (so that the model's task
        # sampler, this template, moves exactly as it does with the local VecEnv).
        task_rngs = self.template_env.spawn_task_rngs(n_envs)
        self.max_replay_steps = int(max_replay_steps)
        self.restart_attempts = int(restart_attempts)
        self.start_timeout_s = float(start_timeout_s)
        self.restart_timeout_s = float(restart_timeout_s)
        #: number of actors started to replace lost ones
        self.n_restarts = 0
        self._closed = False
        self._pending: list[tuple[int, str, tuple]] | None = None
        self._idle: np.ndarray | None = None  # sub-envs the shards leave unstepped until the next reset
        self._pending_refs: list[Any] = []
        self._actors: list[Any] = []

        local_num_cpus = self._local_num_cpus(n_workers, num_cpus)
        if connect_ray(address, local_num_cpus=local_num_cpus):
            warnings.warn(
                f"ray_workers={n_workers} actors x num_cpus={num_cpus:g} need {local_num_cpus} CPUs and this machine has "
                f"{os.cpu_count()} cores: the local Ray started for them has {local_num_cpus} logical CPUs, and the actors "
                "share the cores"
            )
        self.shard_ranges = shard_ranges(n_envs, self._choose_n_workers(ray, n_workers, num_cpus, n_envs))
        self._shard_kwargs = shard_kwargs
        self._env_ref = ray.put(base)  # one copy in the object store for every actor, restarts included
        self._task_rng_refs = [ray.put(task_rngs[a:b]) for a, b in self.shard_ranges]
        #: every set_attr call, in order, and how many of them came before each shard's snapshot
        self._set_attr_history: list[tuple[str, Any]] = []
        self._set_attr_count_at_snapshot = [0] * self.n_workers
        self._snapshots: list[dict[str, Any]] = []
        #: per shard, the calls that changed its state since its snapshot (None: too long, not rebuildable)
        self._logs: list[list[tuple[str, tuple]] | None] = [[] for _ in self.shard_ranges]
        self._logged_steps = [0] * self.n_workers
        #: per shard, the tasks of its last step's infos as received (None: unknown, the next step asks for all)
        self._step_tasks: list[list[Task] | None] = [None] * self.n_workers
        self.actor_node_ids: list[str] = []
        self._start_all_actors(ray)

    # --- setup ----------------------------------------------------------------------------------------------
    @staticmethod
    def _check_actor_options(ray: Any, actor_options: dict[str, Any] | None) -> tuple[dict[str, Any], Any, float]:
        """(options for ``ActorClass.options``, placement group or None, CPUs per actor), validated."""
        if actor_options is not None and not isinstance(actor_options, dict):
            raise ValueError(f"actor_options must be a dict of Ray actor options, got {type(actor_options).__name__}")
        options = dict(actor_options or {})
        reserved = sorted(set(options) & set(_RESERVED_ACTOR_OPTIONS))
        if reserved:
            raise ValueError(
                f"RayTaskVecEnv sets the actor options {reserved} itself (it restarts lost actors with their shard's "
                "state, starts several actors of one class, and runs each shard's calls in order): remove them from "
                "actor_options"
            )
        placement_group = options.pop("placement_group", None)
        if placement_group is not None and "scheduling_strategy" in options:
            raise ValueError("Give actor_options 'placement_group' or 'scheduling_strategy', not both")
        options.setdefault("num_cpus", 1)
        num_cpus = options["num_cpus"]
        if isinstance(num_cpus, bool) or not isinstance(num_cpus, (int, float)) or not num_cpus >= 0:
            raise ValueError(f"actor_options['num_cpus'] must be a number >= 0 (CPUs per actor), got {num_cpus!r}")
        try:
            _remote_worker_class().options(**options)
        except (TypeError, ValueError) as e:
            raise ValueError(f"Invalid Ray actor options {options}: {e}") from e
        return options, placement_group, float(num_cpus)

    def _local_num_cpus(self, n_workers: int | None, num_cpus: float) -> int | None:
        """The logical CPUs for a local Ray that this VecEnv may start: enough for ``n_workers`` actors (on a
        laptop, ``ray_workers=4`` on 2 cores gives 4 actors sharing them) when that is more than the machine's cores;
        None (Ray's default) otherwise. An existing cluster keeps its CPUs (there, actors that do not fit wait)."""
        if n_workers is None or self._placement_group is not None:
            return None
        needed = math.ceil(n_workers * num_cpus)
        return needed if needed > (os.cpu_count() or 1) else None

    def _choose_n_workers(self, ray: Any, n_workers: int | None, num_cpus: float, n_envs: int) -> int:
        """``n_workers``, by default one actor per bundle of the placement group or per ``num_cpus`` free CPUs of the
        cluster (all its CPUs if none is free); an error if not even one actor fits, a warning if the number does not
        fit all at once (in the cluster, or in its free CPUs)."""
        if self._placement_group is not None:
            return min(n_workers or len(self._placement_group.bundle_specs), n_envs)
        cpus = float(ray.cluster_resources().get("CPU", 0.0))
        fitting = int(cpus // num_cpus) if num_cpus > 0 else n_envs
        wanted = min(n_workers or fitting, fitting) * num_cpus
        # CPUs not held by other actors (another RayTaskVecEnv...); those of actors just killed (a VecEnv closed right
        # before this one) come back a moment later, so a shortfall is looked at again for up to a second
        deadline = time.monotonic() + 1.0
        free = float(ray.available_resources().get("CPU", 0.0))
        while free < wanted and time.monotonic() < deadline:
            time.sleep(0.05)
            free = float(ray.available_resources().get("CPU", 0.0))
        fitting_now = int(free // num_cpus) if num_cpus > 0 else n_envs
        if n_workers is None:
            if fitting < 1:
                raise ValueError(
                    f"Each actor asks for num_cpus={num_cpus:g}, and the Ray cluster has {cpus:g} CPUs: lower "
                    "ray_actor_options['num_cpus'] or add nodes"
                )
            # the results do not depend on the number of actors: take the CPUs that are free now, if any
            n_workers = min(fitting_now if fitting_now >= 1 else fitting, n_envs)
        if n_workers > fitting:
            # an autoscaling cluster may still grow: the actors that do not fit wait (up to start_timeout_s)
            warnings.warn(
                f"{n_workers} actors x num_cpus={num_cpus:g} need {n_workers * num_cpus:g} CPUs, the Ray cluster has "
                f"{cpus:g}: actors wait for nodes up to start_timeout_s={self.start_timeout_s:.0f} s"
            )
        elif n_workers > fitting_now:
            warnings.warn(
                f"{n_workers} actors x num_cpus={num_cpus:g} need {n_workers * num_cpus:g} CPUs, and only {free:g} of the "
                f"Ray cluster's {cpus:g} are free (other actors hold the rest, e.g. another RayTaskVecEnv not closed): "
                f"actors wait for them up to start_timeout_s={self.start_timeout_s:.0f} s. Close the other VecEnv, or "
                "give each actor less, e.g. ray_actor_options={'num_cpus': 0.5}"
            )
        return n_workers

    def _new_actor(self, k: int) -> Any:
        options = dict(self._actor_options, max_restarts=0, max_task_retries=0)
        if self._placement_group is not None:
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            bundle = k % len(self._placement_group.bundle_specs)
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                self._placement_group, placement_group_bundle_index=bundle
            )
        start, stop = self.shard_ranges[k]
        attrs = self._attrs_before_snapshot(k)
        shard_args = (self._env_ref, start, stop - start, self._task_rng_refs[k], self._shard_kwargs, attrs)
        return _remote_worker_class().options(**options).remote(*shard_args)

    def _attrs_before_snapshot(self, k: int) -> list[tuple[str, Any]]:
        """The ``set_attr`` calls made before shard ``k``'s snapshot (a snapshot does not hold them; a new actor
        applies them when it is built, then replays the later ones with the rest of the log)."""
        return self._set_attr_history[: self._set_attr_count_at_snapshot[k]]

    def _start_all_actors(self, ray: Any) -> None:
        self._actors = [self._new_actor(k) for k in range(self.n_workers)]
        try:
            hellos = ray.get([actor.hello.remote() for actor in self._actors], timeout=self.start_timeout_s)
        except ray.exceptions.GetTimeoutError as e:
            self.close()
            raise RuntimeError(
                f"Could not start {self.n_workers} Ray actors with {self._actor_options} within {self.start_timeout_s:.0f} s "
                f"(the cluster has {ray.cluster_resources()}, of which {ray.available_resources()} are free): lower "
                "ray_workers or num_cpus, close other Ray VecEnvs that hold CPUs, add nodes, or raise start_timeout_s"
            ) from e
        except ray.exceptions.RayActorError as e:
            self.close()
            raise RuntimeError(
                f"A Ray actor died while building its shard of {type(self.template_env).__name__} ({e}). Every node "
                "needs the same environment as this process (sb3_meta and its dependencies, same versions): install "
                "them there, or pass actor_options={'runtime_env': ...}"
            ) from e
        except BaseException:
            self.close()
            raise
        self._snapshots = [hello["snapshot"] for hello in hellos]
        self.actor_node_ids = [hello["node_id"] for hello in hellos]

    # --- properties -----------------------------------------------------------------------------------------
    @property
    def n_workers(self) -> int:
        """Number of shards (actors)."""
        return len(self.shard_ranges)

    @property
    def actors(self) -> list[Any]:
        """The Ray actor handles, one per shard (they change when a lost actor is replaced)."""
        return list(self._actors)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.template_env).__name__}, n_envs={self.num_envs}, n_workers={self.n_workers})"

    # --- calls to the actors, with recovery -----------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed: its Ray actors were released")

    def _call(self, calls: list[tuple[int, str, tuple]], logged: bool) -> list[Any]:
        """Send ``(shard, method, args)`` calls (at most one per shard) and gather their results in one ``ray.get``.

        :param calls: the calls
        :param logged: whether they change the shards' state (then they are logged for a replay)
        :return: the results, in the order of ``calls``
        """
        self._check_open()
        refs = []
        for k, name, args in calls:
            if logged:
                self._log(k, name, args)
            refs.append(getattr(self._actors[k], name).remote(*args))
        return self._gather(calls, refs, logged)

    def _log(self, k: int, name: str, args: tuple) -> None:
        log = self._logs[k]
        if log is None:
            return
        if name == "step":
            self._logged_steps[k] += 1
            if self._logged_steps[k] > self.max_replay_steps:
                self._logs[k] = None  # the memory it would take grows without bound; rebuildable again at the next reset
                return
        log.append((name, args))

    def _gather(self, calls: list[tuple[int, str, tuple]], refs: list[Any], logged: bool) -> list[Any]:
        ray = import_ray()
        try:
            return ray.get(refs)
        except Exception:
            pass  # an actor died or a call raised: sort it out shard by shard, below
        results: list[Any] = []
        failure: Exception | None = None
        for (k, name, args), ref in zip(calls, refs, strict=True):
            try:
                results.append(ray.get(ref))
            except ray.exceptions.RayActorError as error:
                results.append(self._recover(k, None if logged else (name, args), error))
            except Exception as error:
                log = self._logs[k]
                if logged and log:
                    log.pop()  # a call that raised in the shard (all-or-nothing there) must not be replayed
                failure = failure or error
                results.append(None)
        if failure is not None:
            raise failure
        return results

    def _recover(self, k: int, extra_call: tuple[str, tuple] | None, error: Exception) -> Any:
        """Replace the dead actor of shard ``k``: restore its snapshot on a new actor, replay the logged calls
        (the last of which is the one that failed) and the unlogged ``extra_call``; return the last result."""
        ray = import_ray()
        start, stop = self.shard_ranges[k]
        log = self._logs[k]
        if log is None:
            raise ShardLostError(
                f"The Ray actor of sub-envs [{start}, {stop}) died more than max_replay_steps={self.max_replay_steps} "
                "steps after the last reset(), so its state cannot be rebuilt: close this VecEnv, make a new one and "
                "resume from the last checkpoint (raise max_replay_steps to cover longer passes)"
            ) from error
        calls = [*log, *([extra_call] if extra_call is not None else [])]
        last_error: BaseException = error
        for attempt in range(1, self.restart_attempts + 1):
            try:
                ray.kill(self._actors[k], no_restart=True)
            except Exception:  # already gone
                pass
            actor = self._new_actor(k)
            self._actors[k] = actor
            self.n_restarts += 1
            warnings.warn(
                f"The Ray actor of sub-envs [{start}, {stop}) died ({type(error).__name__}); replaying its pass "
                f"({sum(name == 'step' for name, _ in log)} steps) on a new actor (attempt {attempt}/{self.restart_attempts})"
            )
            try:
                refs = [actor.hello.remote(), actor.replay.remote(self._snapshots[k], calls)]
                hello, result = ray.get(refs, timeout=self.restart_timeout_s)
            except ray.exceptions.GetTimeoutError as e:
                ray.kill(actor, no_restart=True)
                raise ShardLostError(
                    f"The Ray actor of sub-envs [{start}, {stop}) died and no new actor with {self._actor_options} "
                    f"started and replayed its pass within restart_timeout_s={self.restart_timeout_s:.0f} s (the cluster "
                    f"has {ray.available_resources()} free): add nodes or free resources, then resume from the last "
                    "checkpoint; the model was not updated by this pass"
                ) from e
            except ray.exceptions.RayActorError as e:
                last_error = e
                continue
            self.actor_node_ids[k] = hello["node_id"]
            return result
        if self.restart_attempts == 0:
            raise ShardLostError(
                f"The Ray actor of sub-envs [{start}, {stop}) died, and restart_attempts=0 turns replacing it off"
            ) from error
        raise ShardLostError(
            f"The Ray actor of sub-envs [{start}, {stop}) died and {self.restart_attempts} new actors died too "
            "(restart_attempts): check the cluster's nodes, then resume from the last checkpoint; the model was not "
            "updated by this pass"
        ) from last_error

    def _by_shard(self, indices: Sequence[int]) -> dict[int, tuple[list[int], list[int]]]:
        """``{shard: (positions in indices, local sub-env indices)}`` for global sub-env ``indices``."""
        starts = np.array([a for a, _ in self.shard_ranges])
        shards = (np.searchsorted(starts, np.asarray(indices, dtype=np.int64), side="right") - 1).tolist()
        groups: dict[int, tuple[list[int], list[int]]] = {}
        for position, (i, k) in enumerate(zip(indices, shards, strict=True)):
            group = groups.setdefault(k, ([], []))
            group[0].append(position)
            group[1].append(int(i) - self.shard_ranges[k][0])
        return groups

    # --- tasks ----------------------------------------------------------------------------------------------
    def set_tasks(self, tasks: Sequence[Task], indices: VecEnvIndices = None) -> None:
        """Give sub-env ``indices[k]`` the task ``tasks[k]``; all tasks are validated before any shard changes."""
        idx = checked_indices(self, indices)
        tasks = as_task_list(tasks, self.template_env.task_type, len(idx), f"{type(self).__name__}.set_tasks")
        tasks = [self.template_env.validate_task(task) for task in tasks]
        calls = [
            (k, "set_tasks", ([tasks[p] for p in positions], local)) for k, (positions, local) in self._by_shard(idx).items()
        ]
        self._call(calls, logged=True)

    def get_tasks(self, indices: VecEnvIndices = None) -> list[Task]:
        """The task of each sub-env in ``indices`` (all by default)."""
        idx = checked_indices(self, indices)
        groups = self._by_shard(idx)
        results = self._call([(k, "get_tasks", (local,)) for k, (_, local) in groups.items()], logged=False)
        out: list[Any] = [None] * len(idx)
        for (positions, _), shard_tasks in zip(groups.values(), results, strict=True):
            for p, task in zip(positions, shard_tasks, strict=True):
                out[p] = task
        return out

    def sample_task_batch(self, n: int) -> list[Task]:
        """Draw ``n`` tasks with the task RNG of sub-env 0 (as the local batched VecEnv)."""
        return self.env_method("sample_tasks", n, indices=[0])[0]

    # --- RNG states (checkpoints) ---------------------------------------------------------------------------
    def get_rng_states(self) -> dict[str, Any]:
        """Every RNG state of the sub-envs, in the format of the local batched VecEnv's ``get_rng_states``."""
        shards = self._call([(k, "get_rng_states", ()) for k in range(self.n_workers)], logged=False)
        init = [s["init_rngs"] for s in shards]
        return {
            "task_rngs": [state for s in shards for state in s["task_rngs"]],
            "init_rngs": None if any(states is None for states in init) else [state for states in init for state in states],
        }

    def set_rng_states(self, states: dict[str, Any]) -> None:
        """Inverse of :meth:`get_rng_states` (checked for size before any shard changes)."""
        task_rngs, init_rngs = states["task_rngs"], states.get("init_rngs")
        for name, value in (("task_rngs", task_rngs), ("init_rngs", init_rngs)):
            if value is not None and len(value) != self.num_envs:
                raise ValueError(f"RNG states ({name}) are for {len(value)} sub-envs, this VecEnv has {self.num_envs}")
        calls = [
            (k, "set_rng_states", ({"task_rngs": task_rngs[a:b], "init_rngs": None if init_rngs is None else init_rngs[a:b]},))
            for k, (a, b) in enumerate(self.shard_ranges)
        ]
        self._call(calls, logged=True)

    # --- VecEnv API -----------------------------------------------------------------------------------------
    def reset(self) -> VecEnvObs:
        """Reset every shard with its slice of the seeds and options (the start of a pass: new snapshots)."""
        for options in self._options:  # every sub-env's options are checked before any shard changes
            self.template_env.parse_reset_options(options or None)
        calls = [(k, "reset", (self._seeds[a:b], self._options[a:b])) for k, (a, b) in enumerate(self.shard_ranges)]
        results = self._call(calls, logged=True)
        for k, (snapshot, _, _) in enumerate(results):
            self._snapshots[k] = snapshot
            self._set_attr_count_at_snapshot[k] = len(self._set_attr_history)
            self._logs[k] = [calls[k][1:]]
            self._logged_steps[k] = 0
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [info for _, _, infos in results for info in infos]
        self._pending = None
        self._idle = None
        return np.concatenate([obs for _, obs, _ in results])

    def set_idle_envs(self, idle: np.ndarray) -> None:
        """As the local VecEnv's :meth:`~sb3_meta.envs.vec_env.BatchedTaskVecEnv.set_idle_envs`: each shard gets its
        slice with the next step (and skips its idle sub-envs where the local VecEnv would)."""
        self._idle = check_idle_mask(idle, self.num_envs)

    def step_async(self, actions: np.ndarray) -> None:
        """Send each actor its slice of the actions (the whole batch is validated first: a bad action steps nothing)."""
        self._check_open()
        checked = check_actions(actions, self.action_space, self.num_envs)
        # Sent as given (the policy's float32: half the bytes of the float64 check); each shard converts its slice as
        # the local VecEnv converts the whole batch, exactly.
        actions = np.asarray(actions).reshape(checked.shape)
        idle = self._idle
        self._pending = [
            (k, "step", (actions[a:b], None if idle is None else idle[a:b], self._step_tasks[k] is None))
            for k, (a, b) in enumerate(self.shard_ranges)
        ]
        self._pending_refs = []
        for k, name, args in self._pending:
            self._log(k, name, args)
            self._pending_refs.append(self._actors[k].step.remote(*args))

    def step_wait(self) -> VecEnvStepReturn:
        """Gather every shard's step with one ``ray.get`` (rebuilding lost shards) and concatenate."""
        if self._pending is None:
            raise RuntimeError("step_wait() called without step_async()")
        calls, refs = self._pending, self._pending_refs
        self._pending = None
        try:
            results = self._gather(calls, refs, logged=True)
        except BaseException:
            # Replies that did arrive are dropped with the error, so what each actor thinks the learner knows of its
            # tasks may be wrong: the next step asks every shard for all of them.
            self._step_tasks = [None] * self.n_workers
            raise
        step, tasks = join_shard_steps(results, self._step_tasks)
        self._step_tasks = list(tasks)
        return step

    def close(self) -> None:
        """Release the actors (``ray.kill``; Ray frees their CPUs a moment later); Ray itself keeps running (it may
        serve other VecEnvs)."""
        if self._closed:
            return
        self._closed = True
        ray = import_ray()
        if ray.is_initialized():
            for actor in self._actors:
                try:
                    ray.kill(actor, no_restart=True)
                except Exception:  # already dead
                    pass
        self._actors = []

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """``"task"`` per sub-env; any other attribute from the shared template env (as the local batched VecEnv)."""
        idx = checked_indices(self, indices)
        if attr_name == "task":
            return self.get_tasks(idx)
        return [getattr(self.template_env, attr_name)] * len(idx)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set a constant of the template env, here and in every shard (only for all sub-envs at once)."""
        if len(checked_indices(self, indices)) != self.num_envs:
            raise ValueError(f"{type(self).__name__} shares its constants across sub-envs: set_attr needs all indices")
        self._call([(k, "set_attr", (attr_name, value)) for k in range(self.n_workers)], logged=True)
        self._set_attr_history.append((attr_name, value))
        setattr(self.template_env, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        """The task methods of the sub-envs: ``reset_task``, ``get_task``, ``sample_tasks``, ``validate_task``."""
        idx = checked_indices(self, indices)

        def sample_tasks(n: int) -> list[Any]:
            groups = self._by_shard(idx)
            results = self._call([(k, "sample_tasks", (local, n)) for k, (_, local) in groups.items()], logged=True)
            out: list[Any] = [None] * len(idx)
            for (positions, _), shard_tasks in zip(groups.values(), results, strict=True):
                for p, tasks in zip(positions, shard_tasks, strict=True):
                    out[p] = tasks
            return out

        return task_env_method(self, method_name, method_args, method_kwargs, idx, sample_tasks)

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """No sub-env is wrapped (there are no per-env objects)."""
        return [False] * len(checked_indices(self, indices))

    def get_images(self) -> Sequence[np.ndarray | None]:
        """No rendering."""
        return [None] * self.num_envs


def make_ray_task_vec_env(
    env: gym.Env,
    n_envs: int,
    seed: int | None = None,
    ray_workers: int | None = None,
    ray_actor_options: dict[str, Any] | None = None,
    ray_address: str | None = None,
) -> RayTaskVecEnv:
    """``make_task_vec_env(env, n_envs, seed, vec_env_cls="ray", ...)``: a :class:`RayTaskVecEnv` of the distribution.

    :param env: the task distribution, possibly in wrappers that a batched VecEnv keeps (time limits, bookkeeping)
    :param n_envs: number of sub-envs
    :param seed: sub-env ``i`` is seeded with ``seed + i`` at the first reset, as in the local batched VecEnv
    :param ray_workers: number of actors (``n_workers`` of :class:`RayTaskVecEnv`)
    :param ray_actor_options: actor options (``actor_options`` of :class:`RayTaskVecEnv`)
    :param ray_address: the cluster to connect to if this process is not connected yet
    :return: the VecEnv
    """
    base = get_task_env(env)
    if getattr(base, "batched_vec_env_cls", None) is None:
        raise ValueError(f"{type(base).__name__} has no batched VecEnv to run on Ray actors; use vec_env_cls='subproc'")
    if not is_batchable(env):
        raise ValueError(
            f"{env} carries wrappers or a render_mode that a batched VecEnv would drop; use vec_env_cls='dummy' or 'subproc'"
        )
    venv = RayTaskVecEnv(base, n_envs, n_workers=ray_workers, actor_options=ray_actor_options, address=ray_address)
    if seed is not None:
        venv.seed(int(seed))
    return venv
