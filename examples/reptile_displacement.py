"""What Reptile's inner steps change per task: ‖θ_i − θ‖ per task against ‖mean_i(θ_i − θ)‖, the outer update.

Trains Reptile on PointMass (start at the origin) for a few meta-iterations with each inner step size and prints the
medians over iterations of ``train/task_displacement_norm``, ``train/update_norm`` and their ratio
``train/update_coherence`` (1: every task moved the same way, the update is multi-task policy gradient; 1/√n: the
task-specific parts cancel), and the last batch's return gain over the pre-adaptation batch.

    python examples/reptile_displacement.py --inner-lrs 0.1 0.3 --iterations 30 --seed 0
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile

import numpy as np
from stable_baselines3.common.logger import configure

from sb3_meta import Reptile
from sb3_meta.envs import PointMassTasks
from sb3_meta.envs.builders import env_horizon

#: the logged values read back, one row per meta-iteration (SB3's CSV logger, ``log_interval=1``)
KEYS = (
    "train/task_displacement_norm",
    "train/update_norm",
    "train/update_coherence",
    "rollout/pre_adapt_return",
    "rollout/last_inner_batch_return",
)


def logged_iterations(model: Reptile, total_timesteps: int) -> list[dict[str, float]]:
    """Train ``model`` with SB3's CSV logger and return the ``KEYS`` of every meta-iteration it logged."""
    with tempfile.TemporaryDirectory() as folder:
        model.set_logger(configure(folder, ["csv"]))
        model.learn(total_timesteps, log_interval=1)
        model.logger.close()
        with open(os.path.join(folder, "progress.csv")) as f:
            return [{k: float(row[k]) for k in KEYS} for row in csv.DictReader(f) if all(row.get(k) for k in KEYS)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inner-lrs", type=float, nargs="+", default=[0.1, 0.3])
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--n-inner-steps", type=int, default=3)
    parser.add_argument("--meta-batch-size", type=int, default=20)
    parser.add_argument("--fast-batch-size", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print("| inner_lr | ‖θ_i − θ‖ per task | ‖mean_i(θ_i − θ)‖ | coherence | 1/√n | return gain of the inner steps |")
    print("|---|---|---|---|---|---|")
    for inner_lr in args.inner_lrs:
        env = PointMassTasks(start="origin")
        model = Reptile(
            "MlpPolicy",
            env,
            inner_lr=inner_lr,
            n_inner_steps=args.n_inner_steps,
            meta_batch_size=args.meta_batch_size,
            fast_batch_size=args.fast_batch_size,
            seed=args.seed,
        )
        horizon = env_horizon(env)
        steps = args.iterations * args.meta_batch_size * args.fast_batch_size * horizon * args.n_inner_steps
        rows = logged_iterations(model, steps)
        med = {k: float(np.median([r[k] for r in rows])) for k in KEYS}
        gain = float(np.median([r["rollout/last_inner_batch_return"] - r["rollout/pre_adapt_return"] for r in rows]))
        print(
            f"| {inner_lr} | {med['train/task_displacement_norm']:.3f} | {med['train/update_norm']:.3f} | "
            f"{med['train/update_coherence']:.2f} | {1 / np.sqrt(args.meta_batch_size):.2f} | {gain:+.1f} |"
        )
    print(f"(medians over {len(rows)} meta-iterations of {args.meta_batch_size} tasks x {args.fast_batch_size} episodes)")


if __name__ == "__main__":
    main()
