"""Where one MuJoCo meta-iteration's time goes, against the physics limit measured in the same run.

Usage::

    python benchmarks/profile_iteration.py                                  # HalfCheetahDir and AntVel, FOMAML, 40 x 20
    python benchmarks/profile_iteration.py --envs antvel --algos FOMAML MAML --sub-sampling-factors 1 10

``benchmarks/throughput.py`` times the four parts of an iteration (sampling, advantages, inner step, meta-step);
this script splits them further, by wrapping the functions that do the work with wall-clock accumulators (a
profiler with per-call overhead only on a few hundred calls per iteration, unlike cProfile's on every Python call):

- sampling: the physics (the simulations' ``step`` and ``reset``: ``mujoco.batch`` or the thread pool of
  ``mj_step``), the rest of the VecEnv's step (observations, rewards, SB3 info dicts), and the rollout loop
  around it (policy forward and sampling, buffers, checks), each summed over the iteration's sampling passes;
- meta-step: building the TRPO problem (forward passes and linearisation), the meta-gradient, the conjugate
  gradient's Fisher products, and the line search.

Beside them, the time that bare ``mujoco.batch`` stepping needs for the same number of env steps on every core
(``throughput.py``'s limit) and two ceilings: the ratio to the limit if every part but the sampler's physics took no
time, and if the meta-step took none (the sampler alone). Medians over ``--iterations`` timed iterations.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import os
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch as th
from stable_baselines3.common.vec_env import VecEnvWrapper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from throughput import ENVS, make_model, physics_limit

import sb3_meta
from sb3_meta.common import adaptation, meta_gradient
from sb3_meta.envs.mujoco_vec_env import MujocoTaskVecEnv, available_cores
from sb3_meta.maml import maml as maml_module


@contextmanager
def timed(owner: Any, name: str, key: str, totals: dict[str, float], counts: dict[str, int]) -> Iterator[None]:
    """Replace ``owner.name`` by a wrapper that adds its wall-clock time to ``totals[key]``; restore it after."""
    original = getattr(owner, name)
    own = name in vars(owner)  # a module's or class's attribute; an instance's method comes from its class

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - start
            counts[key] += 1

    setattr(owner, name, wrapper)
    try:
        yield
    finally:
        if own:
            setattr(owner, name, original)
        else:
            delattr(owner, name)


def base_vec_env(venv: Any) -> MujocoTaskVecEnv:
    while isinstance(venv, VecEnvWrapper):
        venv = venv.venv
    if not isinstance(venv, MujocoTaskVecEnv):
        raise TypeError(f"expected the batched MuJoCo VecEnv under the model's wrappers, got {type(venv).__name__}")
    return venv


def profile(env_name: str, algo: str, factor: int, args: argparse.Namespace) -> list[dict[str, float]]:
    model = make_model(env_name, algo, factor, args)
    venv = base_vec_env(model.env)
    # The simulations object is the VecEnv's internal state (mujoco.batch or the mj_step thread pool): its
    # methods are where the physics runs, so they are wrapped on the instance, leaving the classes untouched.
    sims = venv._sims
    for _ in range(args.warmup):
        model.learn(1, reset_num_timesteps=False)
    rows = []
    for _ in range(args.iterations):
        totals: dict[str, float] = collections.defaultdict(float)
        counts: dict[str, int] = collections.defaultdict(int)
        wrap: list[tuple[Any, str, str]] = [
            (sims, "step", "physics"),
            (sims, "reset", "physics"),
            (venv, "step_wait", "vecenv_step"),
            (venv, "reset", "vecenv_step"),
            (adaptation, "collect_task_batch", "rollout"),
            (meta_gradient.OuterProblem, "__init__", "outer_problem"),
            (meta_gradient.OuterProblem, "surrogate_and_gradient", "meta_gradient"),
            (meta_gradient.OuterProblem, "kl_hvp", "fisher_products"),
            (maml_module, "trpo_step", "trpo_step"),
        ]
        with contextlib.ExitStack() as stack:
            for owner, name, key in wrap:
                stack.enter_context(timed(owner, name, key, totals, counts))
            model.iteration_times.clear()
            model.learn(1, reset_num_timesteps=False)
        (parts,) = model.iteration_times
        row = dict(parts)
        row["physics"] = totals["physics"]
        row["vecenv_other"] = totals["vecenv_step"] - totals["physics"]
        row["rollout_other"] = totals["rollout"] - totals["vecenv_step"]
        row["sampling_other"] = parts["sampling_s"] - totals["rollout"]  # task setting etc. between the passes
        row["outer_problem"] = totals["outer_problem"]
        row["meta_gradient"] = totals["meta_gradient"]
        row["fisher_products"] = totals["fisher_products"]
        row["n_fisher_products"] = counts["fisher_products"]
        row["cg_and_line_search"] = totals["trpo_step"] - totals["fisher_products"]
        row["meta_step_other"] = parts["meta_step_s"] - totals["outer_problem"] - totals["meta_gradient"] - totals["trpo_step"]
        rows.append(row)
    model.env.close()
    return rows


LINES: list[tuple[str, str]] = [
    ("sampling_s", "sampling"),
    ("physics", "  physics (simulations' step and reset)"),
    ("vecenv_other", "  VecEnv step besides physics (obs, rewards, infos)"),
    ("rollout_other", "  rollout loop (policy forward and sample, buffers)"),
    ("sampling_other", "  between passes"),
    ("advantages_s", "advantages and baseline"),
    ("inner_s", "inner step"),
    ("meta_step_s", "meta-step"),
    ("outer_problem", "  TRPO problem (forward passes, linearisation)"),
    ("meta_gradient", "  meta-gradient"),
    ("fisher_products", "  Fisher products (conjugate gradient)"),
    ("cg_and_line_search", "  CG arithmetic and line search"),
    ("meta_step_other", "  other"),
    ("iteration_s", "iteration"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=list(ENVS), choices=list(ENVS))
    parser.add_argument("--algos", nargs="+", default=["FOMAML"], choices=["FOMAML", "MAML"])
    parser.add_argument("--meta-batch-size", type=int, default=40)
    parser.add_argument("--fast-batch-size", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--limit-repeats", type=int, default=3)
    parser.add_argument("--sub-sampling-factors", nargs="+", type=int, default=[1, 10])
    args = parser.parse_args()
    n_envs = args.meta_batch_size * args.fast_batch_size
    print(
        f"sb3_meta {sb3_meta.__version__}, torch {th.__version__} ({th.get_num_threads()} threads), "
        f"{available_cores()} cores; {n_envs} sub-envs; medians of {args.iterations} iterations after {args.warmup} warm-up"
    )
    for env_name in args.envs:
        limit = statistics.median(physics_limit(env_name, n_envs, args.limit_repeats, steps=200))
        columns, results = [], []
        for algo in args.algos:
            for factor in args.sub_sampling_factors:
                columns.append(algo if factor == 1 else f"{algo}, k={factor}")
                results.append(profile(env_name, algo, factor, args))
        print(f"\n{env_name}: physics limit {limit:,.0f} env-steps/s (bare mujoco.batch, every core)\n")
        print("| part | " + " | ".join(f"{c} s | share" for c in columns) + " |")
        print("|---|" + "---|---|" * len(columns))
        for key, label in LINES:
            cells = [f"{median(rows, key):.2f} | {median(rows, key) / median(rows, 'iteration_s'):.2f}" for rows in results]
            print(f"| {label} | " + " | ".join(cells) + " |")
        for label, cells in summary_rows(results, limit):
            print(f"| {label} | " + " | ".join(f"{cell} | " for cell in cells) + "|")


def median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def summary_rows(results: list[list[dict[str, float]]], limit: float) -> list[tuple[str, list[str]]]:
    """Env steps, Fisher products, the bare-physics time of those steps, the ratio to the limit and two ceilings."""
    bare = [median(rows, "env_steps") / limit for rows in results]  # seconds of bare physics for the same steps
    return [
        ("env steps (valid transitions)", [f"{median(rows, 'env_steps'):,.0f}" for rows in results]),
        ("Fisher products", [f"{median(rows, 'n_fisher_products'):.0f}" for rows in results]),
        ("bare physics for these env steps, s", [f"{b:.2f}" for b in bare]),
        ("ratio to the limit", [f"{b / median(rows, 'iteration_s'):.2f}" for b, rows in zip(bare, results)]),
        ("ceiling: only the sampler's physics", [f"{b / median(rows, 'physics'):.2f}" for b, rows in zip(bare, results)]),
        ("ceiling: only sampling", [f"{b / median(rows, 'sampling_s'):.2f}" for b, rows in zip(bare, results)]),
    ]


if __name__ == "__main__":
    main()
