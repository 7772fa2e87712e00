"""FOMAML on AntVel through the Ray VecEnv against the local batched VecEnv: same seed, same parameters, bit for bit.

    python examples/ray_check.py [--iterations 3] [--workers 2]

Starts a local Ray (``ray.init(num_cpus=...)``), trains two FOMAML models for ``--iterations`` meta-iterations
(4 tasks x 2 episodes, horizon 50, a 32x32 policy), one on ``make_task_vec_env(..., vec_env_cls="ray")`` and one
on the local VecEnv, and prints whether every parameter is equal.
"""

from __future__ import annotations

import argparse
import time

import torch as th

from sb3_meta import FOMAML
from sb3_meta.envs import AntVelTasks, make_task_vec_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    import ray

    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    kwargs = dict(meta_batch_size=4, fast_batch_size=2, seed=0, policy_kwargs=dict(net_arch=dict(pi=[32, 32], vf=[])))
    results = {}
    for backend in ("ray", "local"):
        options = {"vec_env_cls": "ray", "ray_workers": args.workers} if backend == "ray" else {}
        venv = make_task_vec_env(AntVelTasks(max_episode_steps=50, seed=0), 8, seed=0, **options)
        start = time.perf_counter()
        model = FOMAML("MlpPolicy", venv, **kwargs).learn(args.iterations * 8 * 50 * 2)
        results[backend] = (model.policy.state_dict(), model.n_iterations, time.perf_counter() - start)
        venv.close()
    (ray_params, ray_its, ray_s), (local_params, local_its, local_s) = results["ray"], results["local"]
    same = ray_params.keys() == local_params.keys() and all(th.equal(ray_params[k], local_params[k]) for k in ray_params)
    print(f"iterations: ray {ray_its}, local {local_its}; seconds: ray {ray_s:.1f}, local {local_s:.1f}")
    print(f"parameters equal bit for bit: {same}")


if __name__ == "__main__":
    main()
