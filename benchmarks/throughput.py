"""Whole-iteration training throughput on MuJoCo against the physics limit, measured side by side in one run.

Usage::

    python benchmarks/throughput.py                                   # HalfCheetahDir and AntVel, 40 x 20, FOMAML and MAML
    python benchmarks/throughput.py --envs halfcheetahdir --algos FOMAML --iterations 3
    python benchmarks/throughput.py --envs antvel --sub-sampling-factors 1 10   # Fisher products on every 10th sample

For each env and algorithm: seconds per meta-iteration split into sampling (VecEnv and policy), baseline and
advantages, inner step and meta-step; env steps per second of the whole iteration (the valid transitions of all
its sampling passes divided by its wall-clock); and that rate over the physics limit, measured in the same
process just before: ``mujoco.batch`` stepping the same number of bare simulations (``frame_skip`` substeps per
env step, random actions, episodes restarted as in the env) on every core. Medians and min-max ranges over the
timed iterations (after ``--warmup`` untimed ones); the limit is the median of ``--limit-repeats`` segments.
``--sub-sampling-factors`` adds rows with the meta-step's Fisher products on every k-th outer sample
(``sub_sampling_factor``), each a model of its own from the same seed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch as th

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # sampling.py: the raw MuJoCo sampler

from sampling import raw_mujoco_sampler

import sb3_meta
from sb3_meta import MAML
from sb3_meta.envs import AntVelTasks, HalfCheetahDirTasks  # type: ignore[attr-defined]
from sb3_meta.envs.mujoco_vec_env import available_cores

ENVS = {"halfcheetahdir": (HalfCheetahDirTasks, 0.02), "antvel": (AntVelTasks, 0.01)}  # MAML paper's target KL
PARTS = ("sampling_s", "advantages_s", "inner_s", "meta_step_s", "iteration_s")


def physics_limit(env_name: str, n_envs: int, repeats: int, steps: int) -> list[float]:
    """Env steps per second of bare ``mujoco.batch`` stepping of ``n_envs`` simulations, one value per segment."""
    env = ENVS[env_name][0]()
    sampler = raw_mujoco_sampler(env, n_envs)  # type: ignore[arg-type]
    low, high = env.action_space.low, env.action_space.high
    actions = np.random.default_rng(0).uniform(low, high, (steps, n_envs, low.size)).astype(np.float32)
    sampler.time_segment(actions, min(steps, 20), max_seconds=60.0)  # warm-up
    rates = []
    for _ in range(repeats):
        rates.append(sampler.time_segment(actions, steps, max_seconds=600.0))  # env steps per second
    return rates


def make_model(env_name: str, algo: str, sub_sampling_factor: int, args: argparse.Namespace) -> MAML:
    """FOMAML or MAML on one env at ``args.meta_batch_size x args.fast_batch_size``, the MAML paper's target KL."""
    cls, target_kl = ENVS[env_name]
    return MAML(
        "MlpPolicy",
        cls(),
        meta_batch_size=args.meta_batch_size,
        fast_batch_size=args.fast_batch_size,
        first_order=algo == "FOMAML",
        target_kl=target_kl,
        sub_sampling_factor=sub_sampling_factor,
        seed=0,
    )


def run(env_name: str, algo: str, sub_sampling_factor: int, args: argparse.Namespace) -> dict[str, list[float]]:
    model = make_model(env_name, algo, sub_sampling_factor, args)
    for _ in range(args.warmup):
        model.learn(1, reset_num_timesteps=False)  # learn() always finishes the iteration it starts
    model.iteration_times.clear()
    for _ in range(args.iterations):
        model.learn(1, reset_num_timesteps=False)
    times = {k: [t[k] for t in model.iteration_times] for k in (*PARTS, "env_steps")}
    times["steps_per_s"] = [s / t for s, t in zip(times["env_steps"], times["iteration_s"])]
    model.env.close()
    return times


def fmt(values: list[float], digits: int = 2) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=list(ENVS), choices=list(ENVS))
    parser.add_argument("--algos", nargs="+", default=["FOMAML", "MAML"], choices=["FOMAML", "MAML"])
    parser.add_argument("--meta-batch-size", type=int, default=40)
    parser.add_argument("--fast-batch-size", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--limit-repeats", type=int, default=3)
    parser.add_argument("--sub-sampling-factors", nargs="+", type=int, default=[1])
    args = parser.parse_args()
    n_envs = args.meta_batch_size * args.fast_batch_size
    print(
        f"sb3_meta {sb3_meta.__version__}, torch {th.__version__} ({th.get_num_threads()} threads), "
        f"{available_cores()} cores, {platform.processor() or platform.machine()}; "
        f"{args.meta_batch_size} tasks x {args.fast_batch_size} episodes = {n_envs} sub-envs; "
        f"{args.iterations} timed iterations after {args.warmup} warm-up"
    )
    header = ("env", "algo", *(p.replace("_s", " s") for p in PARTS), "env-steps/s", "physics limit /s", "ratio")
    rows = []
    for env_name in args.envs:
        start = time.perf_counter()
        limit = physics_limit(env_name, n_envs, args.limit_repeats, steps=200)
        print(f"{env_name}: physics limit {fmt(limit, 0)} env-steps/s ({time.perf_counter() - start:.0f} s)")
        for algo in args.algos:
            for factor in args.sub_sampling_factors:
                label = algo if factor == 1 else f"{algo}, sub_sampling_factor={factor}"
                times = run(env_name, algo, factor, args)
                ratio = [r / statistics.median(limit) for r in times["steps_per_s"]]
                rows.append(
                    (env_name, label, *(fmt(times[p]) for p in PARTS), fmt(times["steps_per_s"], 0), fmt(limit, 0), fmt(ratio))
                )
                print(f"  {label}: {fmt(times['iteration_s'])} s/iteration, ratio to the limit {fmt(ratio)}")
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
