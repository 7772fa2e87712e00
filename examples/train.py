"""Meta-train MAML, FOMAML or Reptile with the default hyperparameters shipped in ``sb3_meta/hyperparams/<algo>.yml``.

Examples::

    python examples/train.py --algo fomaml --env pointmass-origin --seed 0
    python examples/train.py --algo maml --env antvel --timesteps 3.2e6 --tensorboard-log tb/ --eval-freq 5 \\
        --checkpoint-freq 1000000 --save logs/maml_antvel.zip
    python examples/train.py --algo reptile --env sb3_meta/HalfCheetahVel-v0 \\
        --hyperparams meta_batch_size=20 fast_batch_size=10 "policy_kwargs=dict(net_arch=dict(pi=[64, 64], vf=[]))"

The YAML files follow rl_zoo3: one entry per env name (``default`` for registered ids not listed), whose values
are constructor arguments of the algorithm plus ``n_timesteps`` (env steps; every sampled episode counts) and an
optional ``env_kwargs``. ``--hyperparams key=value ...`` overrides entries (values are parsed as YAML; strings for
``policy_kwargs`` are Python expressions over ``dict``, ``nn`` and ``th``).

At the end the model is saved, then adapted to ``--eval-tasks`` held-out tasks with 0..``--eval-steps`` VPG steps
and the mean return after each step is printed (and written next to the model as ``<save>_adaptation.csv``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import time
from typing import Any

import gymnasium as gym
import torch as th

try:
    import yaml
except ImportError as e:  # pyyaml comes with the extras: pip install -e ".[extra]"
    raise ImportError('examples/train.py reads YAML defaults: pip install -e ".[extra]" (or pip install pyyaml)') from e
from sb3_contrib import TRPO
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback
from torch import nn

import sb3_meta
from sb3_meta import FOMAML, MAML, MetaEvalCallback, Reptile, evaluate_adaptation
from sb3_meta.common.base_class import MetaAlgorithm
from sb3_meta.envs import AntDirTasks, AntVelTasks, HalfCheetahDirTasks, HalfCheetahVelTasks, PointMassTasks

ALGOS: dict[str, type[MetaAlgorithm]] = {"maml": MAML, "fomaml": FOMAML, "reptile": Reptile}
#: Classes of the saved models the diagnostic scripts load: the meta-learners and reproduce.py's SB3 baselines.
MODEL_CLASSES: dict[str, type[BaseAlgorithm]] = {**ALGOS, "trpo": TRPO, "ppo": PPO}
#: Env names: (task-distribution class, constructor arguments). Registered ids work too (``gym.make``).
ENVS: dict[str, tuple[type[gym.Env], dict[str, Any]]] = {
    "pointmass": (PointMassTasks, {"start": "random"}),
    "pointmass-origin": (PointMassTasks, {"start": "origin"}),
    "antvel": (AntVelTasks, {}),
    "antdir": (AntDirTasks, {}),
    "halfcheetahvel": (HalfCheetahVelTasks, {}),
    "halfcheetahdir": (HalfCheetahDirTasks, {}),
}
HYPERPARAMS_DIR = pathlib.Path(sb3_meta.__file__).parent / "hyperparams"
#: Keys of a YAML entry that are not constructor arguments of the algorithm.
NON_ALGO_KEYS = ("n_timesteps", "env_kwargs", "policy")


def make_env(name: str, env_kwargs: dict[str, Any] | None = None) -> gym.Env:
    """The task distribution called ``name`` (an entry of :data:`ENVS` or a registered id)."""
    env_kwargs = dict(env_kwargs or {})
    if name in ENVS:
        cls, defaults = ENVS[name]
        return cls(**{**defaults, **env_kwargs})
    if name in gym.registry:
        return gym.make(name, **env_kwargs)
    raise ValueError(f"Unknown env {name!r}: use one of {sorted(ENVS)} or a registered id such as 'sb3_meta/AntVel-v0'")


def training_updates(model: BaseAlgorithm) -> int | None:
    """Outer updates that trained ``model``: meta-iterations of a meta-learner, policy updates of an SB3 model."""
    if isinstance(model, MetaAlgorithm):
        return model.n_iterations
    return getattr(model, "_n_updates", None)  # SB3 keeps its count private (logged as train/n_updates)


def parse_policy_kwargs(value: Any) -> dict[str, Any]:
    """``policy_kwargs`` from a YAML value: a mapping, or a Python expression string such as ``"dict(net_arch=[64])"``."""
    namespace = {"__builtins__": {}, "dict": dict, "list": list, "nn": nn, "th": th}
    if value is None:
        return {}
    if isinstance(value, str):
        value = eval(value, namespace)  # rl_zoo3 convention; the YAML files are trusted local configuration
    if not isinstance(value, dict):
        raise ValueError(f"policy_kwargs must be a mapping or a string that evaluates to one, got {value!r}")
    value = dict(value)
    if isinstance(value.get("activation_fn"), str):
        value["activation_fn"] = eval(value["activation_fn"], namespace)
    return value


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["key=value", ...]`` to a dict; values are parsed as YAML (numbers, booleans, lists, strings)."""
    overrides: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--hyperparams expects key=value items, got {item!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def load_hyperparams(algo: str, env_name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The YAML entry of ``env_name`` in ``sb3_meta/hyperparams/<algo>.yml`` (``default`` if absent), overridden.

    :return: the entry with ``policy_kwargs`` parsed into a dict
    """
    if algo not in ALGOS:
        raise ValueError(f"Unknown algo {algo!r}: use one of {sorted(ALGOS)}")
    with open(HYPERPARAMS_DIR / f"{algo}.yml") as f:
        table = yaml.safe_load(f)
    if env_name in table:
        hyperparams = dict(table[env_name])
    elif "default" in table:
        hyperparams = dict(table["default"])
    else:
        raise ValueError(f"No hyperparameters for {env_name!r} in {algo}.yml and no 'default' entry")
    hyperparams.update(overrides or {})
    hyperparams["policy_kwargs"] = parse_policy_kwargs(hyperparams.get("policy_kwargs"))
    return hyperparams


def _progress_bar_available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("tqdm", "rich"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", choices=sorted(ALGOS), required=True)
    parser.add_argument("--env", default="pointmass-origin", help=f"one of {sorted(ENVS)} or a registered id")
    parser.add_argument("--timesteps", type=float, default=None, help="env steps (default: n_timesteps of the YAML)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", default=None, help="model path (default: <algo>_<env>_seed<seed>.zip)")
    parser.add_argument("--tensorboard-log", default=None, help="TensorBoard log folder")
    parser.add_argument(
        "--checkpoint-freq", type=int, default=0, help="save a checkpoint every N env steps (0: never; rl_zoo3 convention)"
    )
    parser.add_argument(
        "--eval-freq", type=int, default=0, help="evaluate after adaptation every N meta-iterations (0: never)"
    )
    parser.add_argument("--eval-tasks", type=int, default=40, help="held-out tasks (periodic and final evaluation)")
    parser.add_argument("--eval-steps", type=int, default=3, help="adaptation steps of the final evaluation")
    parser.add_argument("--eval-episodes", type=int, default=20, help="episodes per task and adaptation step")
    parser.add_argument("--hyperparams", nargs="*", default=[], metavar="KEY=VALUE", help="override YAML entries")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--verbose", type=int, default=1)
    parser.add_argument("--no-progress-bar", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> tuple[MetaAlgorithm, Any]:
    args = build_parser().parse_args(argv)
    hyperparams = load_hyperparams(args.algo, args.env, parse_overrides(args.hyperparams))
    total_timesteps = int(args.timesteps if args.timesteps is not None else hyperparams["n_timesteps"])
    env_kwargs = hyperparams.get("env_kwargs") or {}
    algo_kwargs = {k: v for k, v in hyperparams.items() if k not in NON_ALGO_KEYS}
    slug = args.env.replace("/", "_")
    save_path = args.save or f"{args.algo}_{slug}_seed{args.seed}.zip"
    out_dir = os.path.dirname(os.path.abspath(save_path))
    stem = os.path.splitext(save_path)[0]
    os.makedirs(out_dir, exist_ok=True)
    print(f"{args.algo} on {args.env}, seed {args.seed}, {total_timesteps:,} env steps; hyperparameters: {hyperparams}")

    model = ALGOS[args.algo](
        hyperparams.get("policy", "MlpPolicy"),
        make_env(args.env, env_kwargs),
        seed=args.seed,
        tensorboard_log=args.tensorboard_log,
        device=args.device,
        verbose=args.verbose,
        **algo_kwargs,
    )
    callbacks: list[BaseCallback] = []
    if args.checkpoint_freq > 0:
        save_freq = max(args.checkpoint_freq // model.n_envs, 1)  # on_step calls: one per VecEnv step of n_envs steps
        callbacks.append(
            CheckpointCallback(save_freq, os.path.join(out_dir, "checkpoints"), name_prefix=f"{args.algo}_{slug}")
        )
    if args.eval_freq > 0:
        callbacks.append(
            MetaEvalCallback(
                make_env(args.env, env_kwargs),
                eval_freq=args.eval_freq,
                n_tasks=args.eval_tasks,
                n_episodes=args.eval_episodes,
                best_model_save_path=out_dir,
                log_path=out_dir,
                seed=args.seed,
                verbose=args.verbose,
            )
        )
    progress_bar = not args.no_progress_bar and _progress_bar_available()
    start = time.perf_counter()
    model.learn(total_timesteps, callback=callbacks, progress_bar=progress_bar)
    train_s = time.perf_counter() - start
    model.save(save_path)
    n_iterations = len(model.iteration_times)
    print(f"Trained {n_iterations} meta-iterations, {model.num_timesteps:,} env steps in {train_s:.1f} s; saved {save_path}")

    # Final evaluation on tasks other than the periodic evaluation's (another seed of the held-out draw)
    start = time.perf_counter()
    result = evaluate_adaptation(
        model,
        make_env(args.env, env_kwargs),
        n_tasks=args.eval_tasks,
        n_steps=args.eval_steps,
        n_episodes=args.eval_episodes,
        seed=args.seed + 10_000,
    )
    result.to_csv(f"{stem}_adaptation.csv", algo=args.algo, env=args.env, seed=args.seed)
    print(f"\nReturn after k adaptation steps (evaluated in {time.perf_counter() - start:.1f} s):\n{result}")
    return model, result


if __name__ == "__main__":
    main()
