"""Why Reptile's inner steps on reused episodes zig-zag: the probability ratios after the first step.

Usage::

    python examples/reptile_reuse_ratios.py results/reptile_sweep/runs/pointmass-origin/reptile_k3_lr0.3_fbx0.5_reuse_seed0.zip

Loads a Reptile model, samples one pass (``--tasks`` held-out PointMass goals x ``--episodes``), takes one inner step
and measures, on that pass's samples, the ratio r = π_θ1(a|s)/π_θ(a|s) that the next step's clipped surrogate
(:meth:`~sb3_meta.common.meta_gradient.MetaObjective.reused_inner_loss`) weighs: the share of samples whose gradient
the clip has zeroed (Â > 0 and r > 1 + c, or Â < 0 and r < 1 − c), of those still active on the side the first step
moved them away from (Â > 0 and r < 1, or Â < 0 and r > 1: their gradient pulls back) and on the other side.
"""

from __future__ import annotations

import argparse

import torch as th

from sb3_meta import Reptile
from sb3_meta.common.meta_gradient import stack_params
from sb3_meta.envs import PointMassTasks, make_adaptation_vec_env


def ratio_shares(model: Reptile, n_tasks: int, n_episodes: int, seed: int) -> dict[str, float]:
    """Shares of one pass's samples: clipped, active on the wrong side, active on the right side; median |log r|."""
    env = PointMassTasks(seed=seed)
    tasks = env.sample_tasks(n_tasks)
    venv = make_adaptation_vec_env(env, n_tasks * n_episodes)
    loop, theta = model.inner_loop(venv), model.meta_parameters()
    objective = loop.objective
    result = loop.adapt(theta, venv, tasks, 1, n_episodes, seed=seed)
    flat = result.batches[0].flat()
    log_ratio = objective.old_policy(result.adapted, flat)[0] - objective.old_policy(stack_params(theta, n_tasks), flat)[0]
    mask = flat["mask"] > 0
    log_ratio, advantages = log_ratio[mask], flat["advantages"][mask]
    c = objective.reuse_clip_range
    ratio = log_ratio.exp()
    clipped = ((advantages > 0) & (ratio > 1 + c)) | ((advantages < 0) & (ratio < 1 - c))
    wrong = ((advantages > 0) & (ratio < 1)) | ((advantages < 0) & (ratio > 1))
    return {
        "clipped": float(clipped.double().mean()),
        "active_wrong_side": float((wrong & ~clipped).double().mean()),
        "active_right_side": float((~wrong & ~clipped).double().mean()),
        "median_abs_log_ratio": float(log_ratio.abs().median()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="Reptile checkpoints (.zip) trained on PointMass")
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=2017)
    args = parser.parse_args(argv)
    th.set_num_threads(1)
    for path in args.models:
        model = Reptile.load(path, device="cpu")
        shares = ratio_shares(model, args.tasks, args.episodes, args.seed)
        print(
            f"{path}: after one step of {model.inner_lr} ({model.inner_optimizer}): clipped {shares['clipped']:.2f}, "
            f"active on the wrong side {shares['active_wrong_side']:.2f}, on the right side "
            f"{shares['active_right_side']:.2f}; median |log r| {shares['median_abs_log_ratio']:.3f}"
        )


if __name__ == "__main__":
    main()
