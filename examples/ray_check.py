"""FOMAML on AntVel through the Ray VecEnv against the local batched VecEnv: same seed, same parameters, bit for bit.

    python examples/ray_check.py [--iterations 3] [--workers 2] [--env antvel|halfcheetahvel]
    python examples/ray_check.py --paper-size --iterations 2    # the MAML paper's Ant meta-batch

Starts a local Ray (``ray.init(num_cpus=...)``), trains two FOMAML models for ``--iterations`` meta-iterations,
one on ``make_task_vec_env(..., vec_env_cls="ray")`` and one on the local VecEnv, and prints whether every parameter
is equal. By default the run is tiny (4 tasks x 2 episodes, horizon 50, a 32x32 policy); ``--paper-size`` gives the
MAML paper's Ant settings (40 tasks x 20 episodes = 800 sub-envs, horizon 200, a 100x100 policy).
"""

from __future__ import annotations

import argparse
import time

import torch as th

from sb3_meta import FOMAML
from sb3_meta.common.callbacks import StopTrainingOnIterations
from sb3_meta.envs import AntVelTasks, HalfCheetahVelTasks, make_task_vec_env

ENVS = {"antvel": AntVelTasks, "halfcheetahvel": HalfCheetahVelTasks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--env", choices=sorted(ENVS), default="antvel")
    parser.add_argument("--paper-size", action="store_true", help="40 tasks x 20 episodes, horizon 200, 100x100 policy")
    args = parser.parse_args()
    tasks, episodes, horizon, hidden = (40, 20, 200, 100) if args.paper_size else (4, 2, 50, 32)
    n_envs = tasks * episodes
    import ray

    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    kwargs = dict(
        meta_batch_size=tasks, fast_batch_size=episodes, seed=0, policy_kwargs=dict(net_arch=dict(pi=[hidden, hidden], vf=[]))
    )
    results = {}
    for backend in ("ray", "local"):
        options = {"vec_env_cls": "ray", "ray_workers": args.workers} if backend == "ray" else {}
        venv = make_task_vec_env(ENVS[args.env](max_episode_steps=horizon, seed=0), n_envs, seed=0, **options)
        start = time.perf_counter()
        # exactly --iterations meta-iterations (Ant episodes that end early would fit more into a step budget)
        stop = StopTrainingOnIterations(args.iterations)
        model = FOMAML("MlpPolicy", venv, **kwargs).learn(args.iterations * n_envs * horizon * 2, callback=stop)
        results[backend] = (model.policy.state_dict(), model.n_iterations, time.perf_counter() - start)
        venv.close()
    (ray_params, ray_its, ray_s), (local_params, local_its, local_s) = results["ray"], results["local"]
    same = ray_params.keys() == local_params.keys() and all(th.equal(ray_params[k], local_params[k]) for k in ray_params)
    print(f"{args.env}: {tasks} tasks x {episodes} episodes, horizon {horizon}, {hidden}x{hidden} policy")
    print(f"{args.workers} Ray actors")
    print(f"iterations: ray {ray_its}, local {local_its}; seconds: ray {ray_s:.1f}, local {local_s:.1f}")
    print(f"parameters equal bit for bit: {same}")


if __name__ == "__main__":
    main()
