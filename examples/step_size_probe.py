"""How far does a saved model adapt on held-out tasks, by inner step size? (a diagnostic of the Ant gap)

    python examples/step_size_probe.py results/checkpoints/antvel/fomaml_seed0.zip --algo fomaml --env antvel \
        --step-sizes 0.1 0.3 1.0 --out results/ant_diagnosis/fomaml_it105.csv
    python examples/step_size_probe.py results/curves/runs/antvel-fs2/pretrained_seed0.zip --algo trpo --env antvel \
        --step-sizes 0.1 0.3 1.0 --out results/ant_diagnosis/trpo_60.csv

A meta-learner whose return does not rise after a step of its own ``inner_lr`` may still be adaptable with a
larger step (the step was too short), or not at all (the policy is insensitive to the task's gradient). This script
evaluates the model with :func:`~sb3_meta.evaluate_adaptation` on the held-out tasks of ``examples/reproduce.py``
(``--n-tasks`` tasks drawn with ``--eval-seed`` 2017, ``--episodes`` per task and step, episodes seeded with
``--seed``), once per constant step size, and writes one row per step size and number of steps (mean return and
standard error over the tasks) to ``--out`` (CSV) besides printing them.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # train.py: env names

from train import MODEL_CLASSES, make_env, training_updates

from sb3_meta import evaluate_adaptation
from sb3_meta.common.evaluation import sample_eval_tasks


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", help="a saved model (.zip)")
    parser.add_argument("--algo", required=True, choices=sorted(MODEL_CLASSES), help="class of the saved model")
    parser.add_argument("--env", required=True, help="env name of examples/train.py (pointmass, antvel, ...) or an id")
    parser.add_argument("--step-sizes", type=float, nargs="+", default=[0.1, 0.3, 1.0], help="constant step sizes")
    parser.add_argument("--steps", type=int, default=2, help="adaptation steps per step size (default 2)")
    parser.add_argument("--n-tasks", type=int, default=40, help="held-out tasks (default 40, as reproduce.py)")
    parser.add_argument("--episodes", type=int, default=20, help="episodes per task and step (default 20)")
    parser.add_argument("--eval-seed", type=int, default=2017, help="seed of the held-out tasks (reproduce.py's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the episodes")
    parser.add_argument("--out", default=None, help="CSV to write (default: print only)")
    args = parser.parse_args(argv)
    if not os.path.exists(args.path):
        parser.error(f"no saved model at {args.path!r}")
    if any(a <= 0 for a in args.step_sizes):
        parser.error(f"--step-sizes must be positive, got {args.step_sizes}")

    model = MODEL_CLASSES[args.algo].load(args.path, device="cpu")
    env = make_env(args.env, {})
    tasks = sample_eval_tasks(env, args.n_tasks, seed=args.eval_seed)
    updates = training_updates(model)
    print(f"{args.path}: {updates} training updates, {model.num_timesteps:,} env steps; {args.n_tasks} held-out tasks")
    rows = []
    for step_size in args.step_sizes:
        start = time.perf_counter()
        result = evaluate_adaptation(
            model, env, tasks=tasks, n_steps=args.steps, n_episodes=args.episodes, seed=args.seed, adapt_lr=step_size
        )
        gains = result.returns[:, 1:] - result.returns[:, :1]  # per task: what each step count added
        for k in range(result.n_steps + 1):
            rows.append(
                {
                    "model": args.path,
                    "updates": updates,
                    "env_steps": model.num_timesteps,
                    "step_size": step_size,
                    "steps": k,
                    "mean_return": float(result.mean[k]),
                    "stderr": float(result.stderr[k]),
                    "mean_gain": float(gains[:, k - 1].mean()) if k else 0.0,
                    "gain_stderr": float(gains[:, k - 1].std(ddof=1) / np.sqrt(len(tasks))) if k else 0.0,
                }
            )
        line = "  ".join(f"{m:7.2f}" for m in result.mean)
        elapsed = time.perf_counter() - start
        print(f"  step {step_size:g}: mean return after 0..{result.n_steps} steps {line}  ({elapsed:.0f} s)")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
