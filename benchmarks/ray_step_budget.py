"""Where the time of a Ray VecEnv step goes: wall time and the CPU time of every process, per vector step.

    python benchmarks/ray_step_budget.py [--env halfcheetah|ant] [--n-envs 800] [--ray-workers 2] [--steps 600]

In one run, on a local Ray with one CPU per actor (the goal's "one actor per core"):

- ``local batched``: the distribution's batched VecEnv with ``n_envs`` sub-envs (the reference);
- ``shards alone``: each actor steps a batched VecEnv of its shard's size on one thread, all actors at once, timed
  inside the actor: the env's own work on the cluster (physics, observations, rewards), with no transport;
- ``ray``: :class:`~sb3_meta.envs.ray_vec_env.RayTaskVecEnv` with ``--ray-workers`` actors, with the CPU time that
  the learner process and each actor spend per step (read from ``/proc``, so Linux only, over the same steps).

``ray`` minus ``shards alone`` is what Ray adds per step on top of the env. The CPU columns say whether the machine's
cores, not Ray's latency, are the limit: the learner and the actors share them here. All three get the same pre-drawn
uniform random actions; each row is the mean over ``--steps`` steps after a warm-up, repeated ``--repeats`` times
(interleaved), and the median of the repeats is printed with the range.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from sb3_meta.envs import AntVelTasks, HalfCheetahVelTasks, make_task_vec_env
from sb3_meta.envs.ray_vec_env import shard_ranges

ENVS = {"halfcheetah": HalfCheetahVelTasks, "ant": AntVelTasks}


class ShardAlone:
    """Body of a Ray actor: a batched VecEnv of one shard's size, stepped on one thread and timed inside the actor."""

    def __init__(self, env_name: str, n_envs: int) -> None:
        env = ENVS[env_name]()
        self.venv = type(env).batched_vec_env_cls(env, n_envs, n_threads=1)  # as a shard's actor builds it
        self.venv.reset()

    def run(self, actions: np.ndarray) -> float:
        """Mean ms per step over ``actions`` (steps x n_envs x action dims)."""
        start = time.perf_counter()
        for step_actions in actions:
            self.venv.step_packed(step_actions)  # as a shard's actor steps (infos as arrays)
        return 1e3 * (time.perf_counter() - start) / len(actions)


def cpu_seconds(pids: list[int]) -> list[float]:
    """User + system CPU seconds of each process so far (``/proc/<pid>/stat``, fields 14 and 15)."""
    ticks = os.sysconf("SC_CLK_TCK")
    seconds = []
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        seconds.append((int(fields[11]) + int(fields[12])) / ticks)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", choices=sorted(ENVS), default="halfcheetah")
    parser.add_argument("--n-envs", type=int, default=800)
    parser.add_argument("--ray-workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=400, help="steps per timed segment")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import ray

    env_name, n, w = args.env, args.n_envs, args.ray_workers
    ray.init(num_cpus=w, include_dashboard=False, log_to_driver=False)
    local = make_task_vec_env(ENVS[env_name](), n, seed=0)
    shape = local.action_space.shape
    assert shape is not None
    actions = np.random.default_rng(0).uniform(-1.0, 1.0, (args.steps, n, *shape))
    venv = make_task_vec_env(ENVS[env_name](), n, seed=0, vec_env_cls="ray", ray_workers=w)
    learner = os.getpid()
    actor_pids = [ray.get(actor.hello.remote())["pid"] for actor in venv.actors]
    ranges = shard_ranges(n, w)

    rows: dict[str, list[float]] = {"local batched": [], "ray": [], "shards alone": []}
    cpu: dict[str, list[float]] = {"local batched: learner": [], "ray: learner": []}
    cpu.update({f"ray: actor {k}": [] for k in range(w)})

    def timed(vec_env, label: str, processes: list[int], names: list[str]) -> None:
        vec_env.reset()
        for step_actions in actions[:20]:  # warm-up
            vec_env.step(step_actions)
        before, start = cpu_seconds(processes), time.perf_counter()
        for step_actions in actions:
            vec_env.step(step_actions)
        rows[label].append(1e3 * (time.perf_counter() - start) / args.steps)
        for name, b, a in zip(names, before, cpu_seconds(processes), strict=True):
            cpu[name].append(1e3 * (a - b) / args.steps)

    for _ in range(args.repeats):
        timed(local, "local batched", [learner], ["local batched: learner"])
        timed(venv, "ray", [learner, *actor_pids], ["ray: learner", *[f"ray: actor {k}" for k in range(w)]])
    venv.close()  # frees the CPUs for the shards-alone actors
    alone_actor = ray.remote(num_cpus=1)(ShardAlone)
    shards = [alone_actor.remote(env_name, b - a) for a, b in ranges]
    for _ in range(args.repeats):
        per_shard = ray.get([s.run.remote(actions[:, a:b]) for s, (a, b) in zip(shards, ranges, strict=True)])
        rows["shards alone"].append(max(per_shard))  # a step waits for the slowest shard

    print(f"{ENVS[env_name].__name__}, {n} sub-envs, {w} actors of 1 CPU; {os.cpu_count()} cores")
    print(f"{args.steps} steps x {args.repeats} repeats; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| row | ms per vector step (median, range) | share of local batched env-steps/s |")
    print("|---|---|---|")
    base = statistics.median(rows["local batched"])
    for label, values in rows.items():
        m = statistics.median(values)
        print(f"| {label} | {m:.2f} ({min(values):.2f}-{max(values):.2f}) | {base / m:.2f} |")
    print("| process | CPU ms per vector step (median) |")
    print("|---|---|")
    for label, values in cpu.items():
        print(f"| {label} | {statistics.median(values):.2f} |")
    ray_cpu = sum(statistics.median(cpu[name]) for name in cpu if name.startswith("ray"))
    cores = os.cpu_count() or 1
    print(f"ray: all processes {ray_cpu:.2f} CPU ms per step, at least {ray_cpu / cores:.2f} ms of wall time on {cores} cores")


if __name__ == "__main__":
    main()
