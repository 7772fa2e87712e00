"""What the per-iteration RNG snapshot costs: ``get_rng_state`` on the VecEnvs a meta-learner may train on.

Every meta-iteration reads every RNG state once at its start (``IterationStart``: a checkpoint written during the
iteration records it, an exception restores it). On Ray that is one round trip to every actor; this script times
it beside the local batched VecEnv and an SB3 ``SubprocVecEnv``, in one run::

    python benchmarks/rng_snapshot.py --repeats 15

(needs the ``ray`` extra; a local Ray with ``num_cpus=2`` is started).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import SubprocVecEnv

from sb3_meta.common.rng import get_rng_state
from sb3_meta.envs import make_task_vec_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="calls timed per VecEnv")
    parser.add_argument("--n-envs", type=int, default=800, help="HalfCheetahVel sub-envs (batched and Ray)")
    parser.add_argument("--ray-workers", type=int, default=2, help="Ray actors")
    args = parser.parse_args()
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    cases = [
        (
            f"ray ({args.ray_workers} actors), HalfCheetahVel x {args.n_envs}",
            lambda: make_task_vec_env(
                "sb3_meta/HalfCheetahVel-v0", args.n_envs, seed=0, vec_env_cls="ray", ray_workers=args.ray_workers
            ),
        ),
        (
            f"batched, HalfCheetahVel x {args.n_envs}",
            lambda: make_task_vec_env("sb3_meta/HalfCheetahVel-v0", args.n_envs, seed=0),
        ),
        (
            "SB3 SubprocVecEnv, PointMass x 8",
            lambda: make_vec_env("sb3_meta/PointMass-v0", n_envs=8, seed=0, vec_env_cls=SubprocVecEnv),
        ),
    ]
    print("| VecEnv | get_rng_state, ms: median | min | max |\n|---|---|---|---|")
    for name, make in cases:
        venv = make()
        venv.reset()
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            get_rng_state(None, venv)
            times.append((time.perf_counter() - start) * 1e3)
        print(f"| {name} | {np.median(times):.2f} | {min(times):.2f} | {max(times):.2f} |", flush=True)
        venv.close()
    ray.shutdown()


if __name__ == "__main__":
    main()
