"""Seconds per meta-iteration, split into sampling / inner / meta-step, for MAML and FOMAML; and their ratios.

Usage::

    python benchmarks/meta_step.py                 # PointMass (20 tasks x 20 episodes) and AntVel
    python benchmarks/meta_step.py --envs pointmass --iterations 5

Each configuration runs ``--warmup`` iterations (not timed) and ``--iterations`` timed ones; the table shows
medians (and the spread, min-max) over the timed iterations. MAML and FOMAML run one after the other in the
same process, so the ratios compare like with like. Policies: the default 100x100 ReLU, and the 64x64 tanh
policy of the public PyTorch MAML-RL reference (for a fair comparison with its timings).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch as th

import sb3_meta
from sb3_meta import MAML
from sb3_meta.envs import AntVelTasks, PointMassTasks  # type: ignore[attr-defined]

POLICIES = {
    "100x100 relu": {},
    "64x64 tanh": dict(net_arch=dict(pi=[64, 64], vf=[]), activation_fn=th.nn.Tanh),
}


def make_env(name: str):
    if name == "pointmass":
        return PointMassTasks(start="origin")
    if name == "antvel":
        return AntVelTasks()
    raise ValueError(name)


def run(env_name: str, first_order: bool, policy_kwargs: dict, args: argparse.Namespace) -> dict[str, list[float]]:
    model = MAML(
        "MlpPolicy",
        make_env(env_name),
        meta_batch_size=args.meta_batch_size,
        fast_batch_size=args.fast_batch_size,
        first_order=first_order,
        policy_kwargs=policy_kwargs,
        seed=0,
        device=args.device,
    )
    steps_per_iteration = 1  # learn() always finishes the iteration it starts
    model.learn(steps_per_iteration)
    for _ in range(args.warmup):
        model.learn(steps_per_iteration, reset_num_timesteps=False)
    model.iteration_times.clear()
    for _ in range(args.iterations):
        model.learn(steps_per_iteration, reset_num_timesteps=False)
    keys = ["sampling_s", "inner_s", "meta_step_s", "iteration_s"]
    return {k: [t[k] for t in model.iteration_times] for k in keys}


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):7.3f} ({min(values):.3f}-{max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["pointmass", "antvel"], choices=["pointmass", "antvel"])
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    parser.add_argument("--meta-batch-size", type=int, default=20)
    parser.add_argument("--fast-batch-size", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--algos", nargs="+", default=["FOMAML", "MAML"], choices=["FOMAML", "MAML"])
    args = parser.parse_args()
    if args.threads:
        th.set_num_threads(args.threads)

    print(
        f"sb3_meta {sb3_meta.__version__}, torch {th.__version__} ({th.get_num_threads()} threads), {platform.processor()}, "
        f"device {args.device}" + (f" ({th.cuda.get_device_name()})" if args.device.startswith("cuda") else "")
    )
    print(
        f"meta_batch_size={args.meta_batch_size}, fast_batch_size={args.fast_batch_size}, {args.iterations} timed iterations"
    )
    columns = "".join(f" {name:>22s}" for name in ("sampling_s", "inner_s", "meta_step_s", "iteration_s"))
    header = f"{'env':10s} {'policy':13s} {'algo':7s}{columns}"
    print(header)
    print("-" * len(header))
    ratios = []
    for env_name in args.envs:
        for policy_name in args.policies:
            results = {}
            for algo, first_order in (("FOMAML", True), ("MAML", False)):
                if algo not in args.algos:
                    continue
                start = time.perf_counter()
                results[algo] = run(env_name, first_order, POLICIES[policy_name], args)
                r = results[algo]
                print(
                    f"{env_name:10s} {policy_name:13s} {algo:7s} {fmt(r['sampling_s'])} {fmt(r['inner_s'])} "
                    f"{fmt(r['meta_step_s'])} {fmt(r['iteration_s'])}   [{time.perf_counter() - start:.0f} s]",
                    flush=True,
                )
            med = {a: {k: statistics.median(v) for k, v in r.items()} for a, r in results.items()}
            if len(med) < 2:
                continue
            ratios.append(
                (
                    env_name,
                    policy_name,
                    med["MAML"]["meta_step_s"] / med["FOMAML"]["meta_step_s"],
                    med["MAML"]["iteration_s"] / med["FOMAML"]["iteration_s"],
                )
            )
    print()
    print(f"{'env':10s} {'policy':13s} {'MAML/FOMAML meta-step':>22s} {'MAML/FOMAML iteration':>22s}")
    for env_name, policy_name, r_meta, r_iter in ratios:
        print(f"{env_name:10s} {policy_name:13s} {r_meta:22.2f} {r_iter:22.2f}")


if __name__ == "__main__":
    main()
