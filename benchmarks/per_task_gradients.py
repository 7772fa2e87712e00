"""Per-task gradient work batched over tasks with ``torch.func.vmap`` versus a Python loop over tasks.

    python benchmarks/per_task_gradients.py [--device cpu|cuda] [--tasks 40] [--samples 4000]

Synthetic meta-batch shaped like AntVel (105-dim observations, 8-dim actions, 100-100 ReLU policy): for
each task, ``--samples`` inner and outer samples. Times (median over ``--repeats``) of the first-order and
second-order meta-gradient (inner step + outer surrogate gradient) and of one KL Hessian-vector product
(J^T F J), each computed with the shared ``MetaObjective`` (vmap) and with a loop that calls the same
per-task functions one task at a time. The numbers decide where sb3_meta batches over tasks.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch as th
from gymnasium import spaces

from sb3_meta.common.meta_gradient import MetaObjective
from sb3_meta.common.policies import MetaActorCriticPolicy


def synthetic_batch(n_tasks: int, n_samples: int, obs_dim: int, act_dim: int, device: th.device) -> dict[str, th.Tensor]:
    g = th.Generator().manual_seed(0)
    batch = {
        "obs": th.randn(n_tasks, n_samples, obs_dim, generator=g),
        "actions": th.randn(n_tasks, n_samples, act_dim, generator=g),
        "advantages": th.randn(n_tasks, n_samples, generator=g),
        "mask": th.ones(n_tasks, n_samples),
    }
    return {k: v.to(device) for k, v in batch.items()}


def task(batch: dict[str, th.Tensor], i: int) -> dict[str, th.Tensor]:
    return {k: v[i : i + 1] for k, v in batch.items()}


def timed(fn, repeats: int, device: th.device) -> float:
    times = []
    for _ in range(repeats + 1):
        if device.type == "cuda":
            th.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            th.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])  # the first call warms up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if th.cuda.is_available() else "cpu")
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = th.device(args.device)

    obs_space = spaces.Box(-np.inf, np.inf, (105,), np.float32)
    act_space = spaces.Box(-1.0, 1.0, (8,), np.float32)
    policy = MetaActorCriticPolicy(obs_space, act_space, lambda _: 0.0).to(device)
    theta = {k: v.detach() for k, v in policy.actor_parameters().items()}
    inner = synthetic_batch(args.tasks, args.samples, 105, 8, device)
    outer = synthetic_batch(args.tasks, args.samples, 105, 8, device)

    def meta_gradient(objective: MetaObjective, inner_b: dict, outer_b: dict) -> dict[str, th.Tensor]:
        # as MAML's outer step: inner step, then g = mean_i J_iᵀ ∇s_i(θ_i) through the stored inner-gradient graph
        adapted, path = objective.adapt(theta, [inner_b])
        return objective.outer_problem(path, [inner_b], adapted, outer_b).surrogate_and_gradient()[1]

    def looped(fn, objective: MetaObjective) -> None:
        for i in range(args.tasks):
            fn(objective, task(inner, i), task(outer, i))

    def hvp_setup(objective: MetaObjective, inner_b: dict, outer_b: dict):
        adapted, path = objective.adapt(theta, [inner_b])
        return objective.outer_problem(path, [inner_b], adapted, outer_b).kl_hvp

    v = {k: th.randn_like(p) for k, p in theta.items()}
    print(f"device={device}, {args.tasks} tasks x {args.samples} samples, 105-100-100-8 ReLU policy, median of {args.repeats}")
    print(f"{'computation':32s} {'vmap (s)':>10s} {'loop (s)':>10s} {'loop/vmap':>10s}")
    for order, first_order in (("first order", True), ("second order", False)):
        objective = MetaObjective(policy, inner_lr=0.1, first_order=first_order)
        t_vmap = timed(lambda: meta_gradient(objective, inner, outer), args.repeats, device)  # noqa: B023
        t_loop = timed(lambda: looped(meta_gradient, objective), args.repeats, device)  # noqa: B023
        print(f"{'meta-gradient, ' + order:32s} {t_vmap:10.4f} {t_loop:10.4f} {t_loop / t_vmap:10.2f}")
        hvp = hvp_setup(objective, inner, outer)
        hvps = [hvp_setup(objective, task(inner, i), task(outer, i)) for i in range(args.tasks)]
        t_vmap = timed(lambda: hvp(v), args.repeats, device)  # noqa: B023
        t_loop = timed(lambda: [h(v) for h in hvps], args.repeats, device)  # noqa: B023
        print(f"{'KL HVP product, ' + order:32s} {t_vmap:10.4f} {t_loop:10.4f} {t_loop / t_vmap:10.2f}")


if __name__ == "__main__":
    main()
