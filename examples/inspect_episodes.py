"""Episode lengths and returns of a saved model, before adaptation: does the policy keep the robot up?

    python examples/inspect_episodes.py results/ant100/runs/antvel-fs5/fomaml_seed0.zip --algo fomaml --env antvel \
        --frame-skip 5
    python examples/inspect_episodes.py random --algo fomaml --env antvel --episodes 40 --frame-skip 5   # untrained policy

Runs ``--episodes`` episodes (one per sub-env of an SB3 ``make_vec_env``, each on a task the sub-env draws with
its seed) with SB3's ``evaluate_policy`` and stochastic actions, as the policy samples them in training, and
prints each episode's length and return, the policy's mean log-std and how many updates trained it.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # train.py: env names

from train import MODEL_CLASSES, make_env, training_updates

from sb3_meta.envs.builders import env_horizon


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", help="a saved model (.zip), or 'random': a new --algo model (its initial policy)")
    parser.add_argument("--algo", required=True, choices=sorted(MODEL_CLASSES), help="class of the saved model")
    parser.add_argument("--env", required=True, help="env name of examples/train.py (pointmass, antvel, ...) or an id")
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frame-skip", type=int, default=None, help="MuJoCo substeps per env step (default: the env's)")
    args = parser.parse_args(argv)

    env_kwargs = {} if args.frame_skip is None else {"frame_skip": args.frame_skip}
    if args.path == "random":
        model = MODEL_CLASSES[args.algo]("MlpPolicy", make_env(args.env, env_kwargs), seed=args.seed, device="cpu")
    else:
        model = MODEL_CLASSES[args.algo].load(args.path, device="cpu")
    venv = make_vec_env(lambda: make_env(args.env, env_kwargs), n_envs=args.episodes, seed=args.seed)
    returns, lengths = evaluate_policy(
        model, venv, n_eval_episodes=args.episodes, deterministic=False, return_episode_rewards=True
    )
    log_std = getattr(model.policy, "log_std", None)
    updates = training_updates(model)
    print(f"{args.path}: {args.episodes} episodes on {args.env}; {updates} training updates, {model.num_timesteps:,} steps")
    print(f"  lengths {list(map(int, lengths))}")
    horizon = env_horizon(venv.envs[0])
    early = sum(int(n) < horizon for n in lengths) if horizon else None
    print(f"  ended early: {early} of {len(lengths)}; median length {float(np.median(lengths)):.0f}")
    print(f"  returns {[round(float(r), 1) for r in returns]}")
    if log_std is not None:
        print(f"  mean log-std {float(np.mean(log_std.detach().cpu().numpy())):.3f}")
    venv.close()


if __name__ == "__main__":
    main()
