"""Env-steps per second of the batched task samplers against SB3's DummyVecEnv / SubprocVecEnv and raw MuJoCo.

Everything runs in ONE invocation on the same machine: for each env (PointMass, AntVel, HalfCheetahVel) it times

- ``batched``: the distribution's batched VecEnv (``make_task_vec_env(env, n)``: PointMassVecEnv / MujocoTaskVecEnv),
- ``dummy``: SB3's DummyVecEnv over the same env (``make_task_vec_env(..., vec_env_cls="dummy")``),
- ``subproc``: SB3's SubprocVecEnv over the same env (``vec_env_cls=`` a TaskSubprocVecEnv started with ``fork``;
  the start method only changes start-up time), with ``n_envs`` processes and with one process per core,
- ``raw``: the MuJoCo limit: ``mujoco.batch.Batch`` stepping bare simulations with the env's ``frame_skip`` on all
  cores (counted in env steps; no observation, reward or contact forces; episodes restart at the horizon and when
  the Ant leaves its healthy height range, as in the env, so the physics sees the same kind of states).

With ``--ray``, a second group times sampling on Ray for AntVel and HalfCheetahVel at ``--n-envs-ray`` (800)
sub-envs, in the same run:

- ``batched``: the local batched VecEnv at that size (the reference),
- ``ray (w actors)``: :class:`~sb3_meta.envs.ray_vec_env.RayTaskVecEnv` with ``w`` shards (``--ray-workers``,
  default 1 and 2) of ``--ray-cpus-per-actor`` CPUs each, on the cluster at ``--ray-address`` (default: a local Ray),
- ``round trip (w actors)``: the Ray round trip alone, with the same payload and no env: each actor returns a
  prepared shard step (observations, rewards, dones, infos) and the learner concatenates them, as
  ``RayTaskVecEnv.step_wait`` does. Its ms/step is the per-step overhead of sampling on Ray.
- ``round trip, compiled graph (w)`` (with ``--ray-compiled-graph``): the same, through a Ray Compiled Graph.

All samplers get the same pre-drawn uniform random actions. Each number is the median over ``--repeats`` timed
segments of ``--steps`` vector steps (after a warm-up); the spread (min-max) is printed too, as a sign of noise from
other processes on the machine.

Usage::

    python benchmarks/sampling.py            # full run
    python benchmarks/sampling.py --quick    # a few seconds per row
    python benchmarks/sampling.py --envs ant --n-envs-mujoco 64 --steps 300 --repeats 7
    python benchmarks/sampling.py --ray --ray-only --envs ant,halfcheetah     # the Ray table (docs/ray.md)
    python benchmarks/sampling.py --ray --ray-only --ray-address auto --ray-workers 1,2,4,8   # on a cluster
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium
import mujoco
import mujoco.batch
import numpy as np
import stable_baselines3
from stable_baselines3.common.vec_env import VecEnv

from sb3_meta.envs import AntVelTasks, HalfCheetahVelTasks, PointMassTasks, make_task_vec_env
from sb3_meta.envs.mujoco_vec_env import MujocoTaskEnv, available_cores
from sb3_meta.envs.ray_vec_env import join_shard_steps
from sb3_meta.envs.vec_env import TaskSubprocVecEnv


class ForkTaskSubprocVecEnv(TaskSubprocVecEnv):
    """SB3's SubprocVecEnv (with the task API) started with ``fork``: each worker does not re-import torch."""

    def __init__(self, env_fns: list[Callable]) -> None:
        super().__init__(env_fns, start_method="fork")


@dataclass
class Row:
    env: str
    sampler: str
    n_envs: int
    rates: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


class Sampler:
    """Something that takes a batch of actions per call, timed in segments of ``steps`` calls."""

    def __init__(self, label: str, n_envs: int, step: Callable[[np.ndarray], object], close: Callable[[], None]) -> None:
        self.label, self.n_envs, self.step, self.close = label, n_envs, step, close

    def time_segment(self, actions: np.ndarray, steps: int, max_seconds: float, offset: int = 0) -> float:
        """Env-steps/s over ``steps`` calls, or fewer if they take more than ``max_seconds`` (slow samplers)."""
        start = now = time.perf_counter()
        done = 0
        while done < steps and (done == 0 or now - start < max_seconds):
            self.step(actions[(offset + done) % len(actions), : self.n_envs])
            done += 1
            now = time.perf_counter()
        return self.n_envs * done / (now - start)


def vec_env_sampler(label: str, venv: VecEnv) -> Sampler:
    venv.reset()
    return Sampler(label, venv.num_envs, venv.step, venv.close)


def raw_mujoco_sampler(env: MujocoTaskEnv, n_envs: int) -> Sampler:
    """The physics limit: ``mujoco.batch`` stepping ``n_envs`` bare simulations, ``frame_skip`` substeps per env step.

    Episodes restart at the horizon and when the Ant leaves its healthy height range (as in the env), so the physics
    sees the same kind of states (falling, on the ground, jumping) as the samplers.
    """
    batch = mujoco.batch.Batch(env.model, n_envs, nthread=available_cores())
    qpos, qvel, ctrl = batch.bind("qpos"), batch.bind("qvel"), batch.bind("ctrl")
    rng = np.random.default_rng(0)
    scale = env._reset_noise_scale
    elapsed = np.zeros(n_envs, dtype=np.int64)
    z_range = getattr(env, "_healthy_z_range", None) if env.terminate_when_unhealthy else None

    def reset(ids: np.ndarray) -> None:
        batch.reset(ids, stage=mujoco.mjtStage.mjSTAGE_NONE)
        qpos[ids] = env.init_qpos + rng.uniform(-scale, scale, (len(ids), env.model.nq))
        qvel[ids] = env.init_qvel + scale * rng.standard_normal((len(ids), env.model.nv))
        batch.forward(ids)
        elapsed[ids] = 0

    def step(action: np.ndarray) -> None:
        ctrl[...] = action
        batch.step(nstep=env.frame_skip)
        elapsed[:] += 1
        done = elapsed >= env.max_episode_steps
        if z_range is not None:
            done |= (qpos[:, 2] < z_range[0]) | (qpos[:, 2] > z_range[1])
        if done.any():
            reset(np.flatnonzero(done))

    reset(np.arange(n_envs))
    return Sampler("raw mujoco.batch", n_envs, step, lambda: None)


def time_samplers(
    samplers: list[Sampler], actions: np.ndarray, steps: int, repeats: int, max_seconds: float
) -> dict[str, list[float]]:
    """Env-steps/s of every sampler per repeat; the repeats are interleaved so that background load hits all alike."""
    rates: dict[str, list[float]] = {sampler.label: [] for sampler in samplers}
    for sampler in samplers:  # warm-up
        sampler.time_segment(actions, max(1, steps // 4), max_seconds / 4)
    for repeat in range(repeats):
        for sampler in samplers:
            rates[sampler.label].append(sampler.time_segment(actions, steps, max_seconds, offset=repeat * steps))
    return rates


def bench_env(
    name: str,
    make_env: Callable[[], object],
    n_envs: int,
    steps: int,
    repeats: int,
    max_seconds: float,
    raw: bool,
    max_procs: int,
) -> list[Row]:
    """Time every sampler of one env; the repeats are interleaved so that background load hits all samplers alike."""
    env = make_env()
    env.reset(seed=0)  # type: ignore[attr-defined]
    action_shape = env.action_space.shape  # type: ignore[attr-defined]
    actions = np.random.default_rng(0).uniform(-1.0, 1.0, (64, n_envs, *action_shape))
    samplers: list[Sampler] = []
    try:
        # SubprocVecEnv first (forking before this process starts any thread pool): n_envs processes (at most
        # max_procs) and one process per core
        for n in sorted({min(n_envs, max_procs), available_cores()}, reverse=True):
            venv = make_task_vec_env(env, n, seed=0, vec_env_cls=ForkTaskSubprocVecEnv)  # type: ignore[arg-type]
            samplers.append(vec_env_sampler(f"subproc ({n} procs)", venv))
        samplers.append(vec_env_sampler("dummy", make_task_vec_env(env, n_envs, seed=0, vec_env_cls="dummy")))
        batched = make_task_vec_env(env, n_envs, seed=0)
        samplers.append(vec_env_sampler(f"batched ({getattr(batched, 'backend', 'numpy')})", batched))
        if raw:
            samplers.append(raw_mujoco_sampler(env, n_envs))  # type: ignore[arg-type]
        rates = time_samplers(samplers, actions, steps, repeats, max_seconds)
    finally:
        for sampler in samplers:
            sampler.close()
    rows = [Row(name, sampler.label, sampler.n_envs, rates[sampler.label]) for sampler in samplers]
    for row in rows:
        print(f"  {name:<14} {row.sampler:<22} n_envs={row.n_envs:<5d} {row.median:>12,.0f} env-steps/s", flush=True)
    return rows


# --- sampling on Ray ------------------------------------------------------------------------------------------------
class _PreparedShardStep:
    """Body of a Ray actor that answers every step with a prepared shard step (the payload, without the env)."""

    def __init__(self, reply: tuple) -> None:
        self.reply = reply

    def step(self, actions: np.ndarray) -> tuple:
        return self.reply


def prepared_shard_actors(
    ray: Any, batched: VecEnv, node_ids: list[str]
) -> tuple[list[Any], list[tuple[int, int]], list[list]]:
    """One :class:`_PreparedShardStep` actor per shard of ``batched``, on the node of that shard's actor
    (``node_ids``), holding no CPU (it computes nothing), the shards' ranges of sub-envs, and each shard's tasks
    (which the learner knows from the shard's previous steps)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from sb3_meta.envs.ray_vec_env import shard_ranges

    batched.reset()
    shape = batched.action_space.shape
    obs, rewards, dones, infos = batched.step_packed(np.zeros((batched.num_envs, *shape)))  # type: ignore[attr-defined, misc]
    ranges = shard_ranges(batched.num_envs, len(node_ids))
    actors, known_tasks = [], []
    payload: list[int] = []
    for (a, b), node_id in zip(ranges, node_ids):
        options = {"num_cpus": 0, "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=False)}
        # What a shard sends back in the middle of a pass: its infos without their tasks, and no task changes
        shard_infos = infos.slice(a, b)
        reply = (obs[a:b], rewards[a:b], dones[a:b], dataclasses.replace(shard_infos, tasks=[]), {})
        known_tasks.append(shard_infos.tasks)
        actors.append(ray.remote(_PreparedShardStep).options(**options).remote(reply))
        sizes = [len(ray.cloudpickle.dumps(part)) for part in reply]
        payload = [total + size for total, size in zip(payload, sizes, strict=True)] if payload else sizes
    obs_b, rewards_b, dones_b, infos_b, tasks_b = payload
    print(
        f"  reply of all shards per step, pickled: obs {obs_b:,} B, rewards {rewards_b:,} B, dones {dones_b:,} B, "
        f"infos without tasks {infos_b:,} B, task changes {tasks_b:,} B (a step in the middle of a pass)"
    )
    return actors, ranges, known_tasks


def ray_round_trip_sampler(ray: Any, batched: VecEnv, node_ids: list[str]) -> Sampler:
    """What ``RayTaskVecEnv.step`` costs besides the env: slices of actions out, shard steps back, concatenated.

    One actor per shard (:func:`prepared_shard_actors`).
    """
    actors, ranges, known_tasks = prepared_shard_actors(ray, batched, node_ids)

    def step(actions: np.ndarray) -> tuple:
        replies = ray.get([actor.step.remote(actions[a:b]) for actor, (a, b) in zip(actors, ranges)])
        return join_shard_steps(replies, known_tasks)  # as RayTaskVecEnv.step_wait joins them

    def close() -> None:
        for actor in actors:
            ray.kill(actor)

    return Sampler(f"round trip ({len(node_ids)} actors)", batched.num_envs, step, close)


def ray_compiled_round_trip_sampler(ray: Any, batched: VecEnv, node_ids: list[str]) -> Sampler:
    """The same round trip as :func:`ray_round_trip_sampler`, through a Ray Compiled Graph (beta) of the actors.

    A compiled graph replaces each task submission by writes to channels set up once (shared memory on one node):
    this row says how much of the per-step overhead a compiled-graph transport would remove. ``RayTaskVecEnv`` does
    not use one (beta API; a dead actor needs a teardown and a new compilation; see docs/ray.md).
    """
    from ray.dag import InputNode, MultiOutputNode

    actors, ranges, known_tasks = prepared_shard_actors(ray, batched, node_ids)
    with InputNode() as shard_actions:
        graph = MultiOutputNode([actor.step.bind(shard_actions[i]) for i, actor in enumerate(actors)])
    compiled = graph.experimental_compile()

    def step(actions: np.ndarray) -> tuple:
        return join_shard_steps(ray.get(compiled.execute(*[actions[a:b] for a, b in ranges])), known_tasks)

    def close() -> None:
        compiled.teardown()
        for actor in actors:
            ray.kill(actor)

    return Sampler(f"round trip, compiled graph ({len(node_ids)})", batched.num_envs, step, close)


def bench_ray_env(
    name: str,
    make_env: Callable[[], gymnasium.Env],
    n_envs: int,
    workers: list[int],
    actor_options: dict[str, Any],
    steps: int,
    repeats: int,
    max_seconds: float,
    compiled_graph: bool = False,
) -> list[Row]:
    """The local batched VecEnv, RayTaskVecEnv with each number of actors, and the bare Ray round trip, at ``n_envs``.

    With ``compiled_graph``, also the bare round trip through a Ray Compiled Graph.

    One timing group per number of actors (the batched VecEnv timed in each, interleaved with that group's Ray
    samplers), so that the cluster needs CPUs for the largest group only, not for all of them at once.
    """
    import ray

    env = make_env()
    action_shape = env.action_space.shape
    assert action_shape is not None  # a Box: the MuJoCo distributions'
    actions = np.random.default_rng(0).uniform(-1.0, 1.0, (64, n_envs, *action_shape))
    local = make_task_vec_env(env, n_envs, seed=0)
    batched = vec_env_sampler(f"batched ({getattr(local, 'backend', 'numpy')})", local)
    rows = {batched.label: Row(name, batched.label, n_envs, [])}
    try:
        for n_workers in workers:
            group: list[Sampler] = []
            try:
                venv = make_task_vec_env(
                    env, n_envs, seed=0, vec_env_cls="ray", ray_workers=n_workers, ray_actor_options=actor_options
                )
                group.append(vec_env_sampler(f"ray ({n_workers} actors)", venv))
                reference = make_task_vec_env(env, n_envs, seed=0)
                group.append(ray_round_trip_sampler(ray, reference, venv.actor_node_ids))  # type: ignore[attr-defined]
                if compiled_graph:
                    group.append(ray_compiled_round_trip_sampler(ray, reference, venv.actor_node_ids))  # type: ignore[attr-defined]
                reference.close()
                rates = time_samplers([batched, *group], actions, steps, repeats, max_seconds)
            finally:
                for sampler in group:
                    sampler.close()
            for label, label_rates in rates.items():
                rows.setdefault(label, Row(name, label, n_envs, [])).rates.extend(label_rates)
    finally:
        batched.close()
    for row in rows.values():
        ms = 1e3 * row.n_envs / row.median
        print(f"  {name:<14} {row.sampler:<22} n_envs={row.n_envs:<5d} {row.median:>12,.0f} env-steps/s {ms:>9.2f} ms/step")
    return list(rows.values())


def print_ray_table(rows: list[Row]) -> None:
    """Env-steps/s and ms per vector step of each Ray row, beside the local batched VecEnv of the same size, and the
    share of the batched VecEnv's env-steps/s that each Ray VecEnv row reaches (the goal's measure)."""
    widths = (14, 22, 6, 20, 10, 22, 16)

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(f"{c:<{w}}" if i < 2 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    print()
    print(line(("env", "sampler", "n_envs", "env-steps/s (median)", "ms/step", "ms/step vs batched", "ray ÷ batched")))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for env in dict.fromkeys(row.env for row in rows):
        own = [row for row in rows if row.env == env]
        batched = next(row for row in own if row.sampler.startswith("batched"))
        batched_ms = 1e3 * batched.n_envs / batched.median
        for row in own:
            ms = 1e3 * row.n_envs / row.median
            is_ray = not row.sampler.startswith(("batched", "round trip"))
            vs, share = (f"{ms - batched_ms:+.2f}", f"{row.median / batched.median:.2f}") if is_ray else ("", "")
            print(line((row.env, row.sampler, str(row.n_envs), f"{row.median:,.0f}", f"{ms:.2f}", vs, share)))
    print()
    print("round trip = the Ray transport alone (same payload, no env): the per-step overhead of sampling on Ray")


def print_table(rows: list[Row]) -> None:
    widths = (14, 22, 6, 20, 23)
    titles = ("env", "sampler", "n_envs", "env-steps/s (median)", "min - max")
    print()
    print("| " + " | ".join(f"{t:<{w}}" if i < 2 else f"{t:>{w}}" for i, (t, w) in enumerate(zip(titles, widths))) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        spread = f"{min(row.rates):,.0f} - {max(row.rates):,.0f}"
        cells = (row.env, row.sampler, str(row.n_envs), f"{row.median:,.0f}", spread)
        print("| " + " | ".join(f"{c:<{w}}" if i < 2 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, widths))) + " |")
    print()
    for env in dict.fromkeys(row.env for row in rows):
        own = [row for row in rows if row.env == env]
        batched = next(row for row in own if row.sampler.startswith("batched"))
        ratios = ", ".join(f"{batched.median / row.median:.2f}x {row.sampler}" for row in own if row is not batched)
        print(f"{env}: batched = {ratios}")
        raw = [row for row in own if row.sampler.startswith("raw")]
        if raw:
            print(f"{env}: batched reaches {100 * batched.median / raw[0].median:.0f}% of the raw MuJoCo limit")


def check_targets(rows: list[Row]) -> None:
    """The targets: PointMass batched >= 2M env-steps/s; AntVel batched >= 80% of raw and >= 1.5x SubprocVecEnv."""

    def median(env: str, prefix: str) -> list[float]:
        return [row.median for row in rows if row.env == env and row.sampler.startswith(prefix)]

    checks = []
    if median("PointMass", "batched"):
        checks.append(("PointMass batched >= 2,000,000 env-steps/s", median("PointMass", "batched")[0] >= 2e6))
    if median("AntVel", "batched"):
        batched = median("AntVel", "batched")[0]
        checks.append(("AntVel batched >= 80% of raw MuJoCo", batched >= 0.8 * median("AntVel", "raw")[0]))
        checks.append(
            ("AntVel batched >= 1.5x every SubprocVecEnv", all(batched >= 1.5 * m for m in median("AntVel", "subproc")))
        )
    for text, ok in checks:
        print(f"target {'met' if ok else 'MISSED'}: {text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (fewer steps and repeats)")
    parser.add_argument("--envs", default="pointmass,ant,halfcheetah", help="comma-separated: pointmass, ant, halfcheetah")
    parser.add_argument("--n-envs-point-mass", type=int, default=2000, help="sub-envs for PointMass (batched and dummy)")
    parser.add_argument("--n-envs-mujoco", type=int, default=40, help="sub-envs for Ant and HalfCheetah")
    parser.add_argument("--max-procs", type=int, default=64, help="most SubprocVecEnv processes (default 64)")
    parser.add_argument("--steps", type=int, default=None, help="vector steps per timed segment (default 200, quick 50)")
    parser.add_argument("--repeats", type=int, default=None, help="timed segments per row (default 5, quick 3)")
    parser.add_argument("--max-seconds", type=float, default=None, help="cap of one segment (default 3 s, quick 0.5 s)")
    parser.add_argument("--ray", action="store_true", help="also time RayTaskVecEnv (AntVel, HalfCheetahVel)")
    parser.add_argument("--ray-only", action="store_true", help="with --ray: only the Ray group")
    parser.add_argument("--n-envs-ray", type=int, default=800, help="sub-envs of the Ray group (default 800)")
    parser.add_argument("--ray-workers", default="1,2", help="comma-separated numbers of actors (default 1,2)")
    parser.add_argument("--ray-cpus-per-actor", type=float, default=1.0, help="num_cpus of each actor (default 1)")
    parser.add_argument(
        "--ray-compiled-graph", action="store_true", help="with --ray: also the bare round trip through a Ray Compiled Graph"
    )
    parser.add_argument("--ray-address", default=None, help="Ray cluster (default: RAY_ADDRESS, else a local Ray)")
    args = parser.parse_args()
    steps = args.steps or (50 if args.quick else 200)
    repeats = args.repeats or (3 if args.quick else 5)
    max_seconds = args.max_seconds or (0.5 if args.quick else 3.0)
    chosen = [e.strip() for e in args.envs.split(",") if e.strip()]

    print(
        f"{platform.processor() or platform.machine()}, {available_cores()} cores, load average {os.getloadavg()[0]:.2f}; "
        f"mujoco {mujoco.__version__}, gymnasium {gymnasium.__version__}, stable-baselines3 {stable_baselines3.__version__}, "
        f"numpy {np.__version__}; steps={steps}, repeats={repeats}"
    )
    rows: list[Row] = []
    common = {"steps": steps, "repeats": repeats, "max_seconds": max_seconds, "max_procs": args.max_procs}
    if not (args.ray and args.ray_only):
        if "pointmass" in chosen:
            rows += bench_env("PointMass", PointMassTasks, args.n_envs_point_mass, raw=False, **common)
        if "ant" in chosen:
            rows += bench_env("AntVel", AntVelTasks, args.n_envs_mujoco, raw=True, **common)
        if "halfcheetah" in chosen:
            rows += bench_env("HalfCheetahVel", HalfCheetahVelTasks, args.n_envs_mujoco, raw=True, **common)
        print_table(rows)
        check_targets(rows)
    if args.ray:
        from sb3_meta.envs.ray_vec_env import connect_ray, import_ray

        ray = import_ray()
        connect_ray(args.ray_address)
        print(f"ray {ray.__version__}, cluster {ray.cluster_resources()}")
        workers = [int(w) for w in args.ray_workers.split(",") if w.strip()]
        ray_common = {"steps": steps, "repeats": repeats, "max_seconds": max_seconds}
        ray_common.update(workers=workers, actor_options={"num_cpus": args.ray_cpus_per_actor})
        ray_common.update(compiled_graph=args.ray_compiled_graph)
        ray_rows: list[Row] = []
        if "ant" in chosen:
            ray_rows += bench_ray_env("AntVel", AntVelTasks, args.n_envs_ray, **ray_common)  # type: ignore[arg-type]
        if "halfcheetah" in chosen:
            ray_rows += bench_ray_env("HalfCheetahVel", HalfCheetahVelTasks, args.n_envs_ray, **ray_common)  # type: ignore[arg-type]
        if ray_rows:
            print_ray_table(ray_rows)
        ray.shutdown()
    print(f"load average after: {os.getloadavg()[0]:.2f} (other processes on the machine add noise)")


if __name__ == "__main__":
    main()
