"""Quickstart: meta-train FOMAML on the 2D point mass, adapt to unseen goals, compare with the MAML paper.

    python examples/quickstart.py [--iterations 150] [--seed 0]

Trains on ``PointMassTasks(start="origin")`` (every episode starts at (0, 0), as in the original MAML code,
so the numbers are comparable with MAML's Fig. 5), then adapts to 40 held-out goals with 0..3 vanilla
policy-gradient steps and prints the mean return after each step next to the MAML paper's numbers.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from sb3_meta import FOMAML
from sb3_meta.envs import PointMassTasks

# MAML paper, Fig. 5 (2D navigation, origin start, 40 test tasks): mean return after k gradient steps, as read
# from the result files of the original MAML code (the project's reference table holds the same numbers).
MAML_PAPER = {
    "maml": {0: -40.41, 1: -11.68, 2: -3.33, 3: -3.23},
    "random": {0: -82.66, 1: -57.96, 2: -53.84, 3: -46.81},
}


def paper_numbers(method: str) -> dict[int, float]:
    """MAML paper (Finn et al., 2017, Fig. 5) point-mass returns after 0..3 steps."""
    return MAML_PAPER[method]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=150, help="meta-iterations (20 tasks x 20 episodes each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-test-tasks", type=int, default=40)
    parser.add_argument("--save", default="fomaml_pointmass.zip")
    args = parser.parse_args()

    env = PointMassTasks(start="origin")
    model = FOMAML("MlpPolicy", env, meta_batch_size=20, fast_batch_size=20, seed=args.seed, verbose=0)
    steps_per_iteration = 2 * 20 * 20 * env.max_episode_steps  # pre- and post-adaptation episodes
    start = time.time()
    model.learn(total_timesteps=args.iterations * steps_per_iteration, progress_bar=True)
    train_s = time.time() - start
    model.save(args.save)

    # Held-out goals from a differently seeded task distribution
    test_env = PointMassTasks(start="origin", seed=10_000 + args.seed)
    tasks = test_env.sample_tasks(args.n_test_tasks)
    # Step size 0.1 (the inner_lr it was trained with) at every step, and the original MAML test protocol: later
    # steps at half the first one's step size. The same seed gives the same episodes up to the second step.
    columns = {}
    for label, step_sizes in (("FOMAML, 0.1 each step", 0.1), ("FOMAML, 0.1/0.05/0.05", [0.1, 0.05, 0.05])):
        _, returns = model.adapt_tasks(tasks, n_steps=3, n_episodes=20, env=test_env, seed=args.seed, adapt_lr=step_sizes)
        columns[label] = (returns.mean(axis=0), returns.std(axis=0, ddof=1) / np.sqrt(len(tasks)))

    maml = paper_numbers("maml")
    random_init = paper_numbers("random")
    print(
        f"\nFOMAML on PointMass (origin start): {args.iterations} meta-iterations, {model.num_timesteps:,} env steps, "
        f"{train_s / 60:.1f} min; {len(tasks)} held-out goals, 20 episodes per step"
    )
    print(
        f"{'grad steps':>10s} "
        + " ".join(f"{label:>22s}" for label in columns)
        + f" {'MAML paper':>11s} {'random (paper)':>15s}"
    )
    for k in range(4):
        cells = " ".join(f"{mean[k]:>14.2f} ± {stderr[k]:<5.2f}" for mean, stderr in columns.values())
        print(f"{k:>10d} {cells} {maml.get(k, float('nan')):>11.2f} {random_init.get(k, float('nan')):>15.2f}")
    print(f"\nSaved the meta-trained model to {args.save}. One-task adaptation: model.adapt(task, steps=3)")


if __name__ == "__main__":
    main()
