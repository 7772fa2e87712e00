"""CUDA checks for sb3_meta, run on a GPU machine (see README, "GPU").

    python benchmarks/gpu_check.py

1. MAML, FOMAML and Reptile train two meta-iterations with ``device="cuda"`` on PointMass and on AntVel
   (small meta-batch), save, load on the CPU, predict, and adapt.
2. The MAML and FOMAML meta-gradients and KL Hessian-vector products computed on CUDA equal the CPU ones for
   the same episodes (float64).
Prints PASS/FAIL lines; exits non-zero on a failure.
"""

from __future__ import annotations

import argparse
import io
import sys
import time

import numpy as np
import torch as th

from sb3_meta import FOMAML, MAML, Reptile
from sb3_meta.envs import AntVelTasks, PointMassTasks


def check(name: str, ok: bool, detail: str = "") -> bool:
    print(f"{'PASS' if ok else 'FAIL'}  {name} {detail}", flush=True)
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("device", nargs="?", default="cuda", help='the device to check ("cpu": a dry run without a GPU)')
    dev = parser.parse_args().device
    if dev == "cuda":
        assert th.cuda.is_available(), "no CUDA device"
        print("device:", th.cuda.get_device_name(), "torch", th.__version__)
    ok = True
    for env_fn, name, sizes in (
        (lambda: PointMassTasks(start="origin"), "PointMass", (10, 10)),
        (AntVelTasks, "AntVel", (4, 4)),
    ):
        for cls in (FOMAML, MAML, Reptile):
            start = time.perf_counter()
            model = cls("MlpPolicy", env_fn(), meta_batch_size=sizes[0], fast_batch_size=sizes[1], seed=0, device=dev)
            steps = 1
            model.learn(steps)
            model.learn(steps, reset_num_timesteps=False)
            params_ok = all(p.device.type == dev and th.isfinite(p).all() for p in model.policy.parameters())
            buffer = io.BytesIO()
            model.save(buffer)
            buffer.seek(0)
            loaded = cls.load(buffer, device="cpu")
            obs = np.stack([env_fn().reset(seed=i)[0] for i in range(3)])
            same = np.allclose(
                model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0], atol=1e-5
            )
            adapted = model.adapt(env_fn().sample_tasks(1)[0], steps=1, seed=0)
            ok &= check(
                f"{name} {cls.__name__} {dev}: 2 iterations, save/load to cpu, predict, adapt",
                params_ok and same and adapted.policy.device.type == dev,
                f"({time.perf_counter() - start:.1f} s, {model.num_timesteps} steps, iteration {model.iteration_times[-1]})",
            )

    # Same episodes, float64: CUDA and CPU meta-gradients agree
    for first_order in (True, False):
        model = MAML("MlpPolicy", PointMassTasks(), meta_batch_size=4, fast_batch_size=5, seed=1, first_order=first_order)
        model.policy.double()
        tasks = model._sample_tasks(4)
        batches = model.inner_loop().run(model.meta_parameters(), model.env, tasks, 1, 5).batches
        grads, hvps = {}, {}
        for device in ("cpu", dev):
            policy = model.policy.to(device)
            objective = model.objective
            inner = [
                {k: v.to(device).double() if v.is_floating_point() else v.to(device) for k, v in batches[0].flat().items()}
            ]
            outer = {k: v.to(device).double() if v.is_floating_point() else v.to(device) for k, v in batches[1].flat().items()}
            theta = {k: v.detach().clone() for k, v in policy.actor_parameters().items()}
            # as MAML's outer step computes them: meta-gradient and one KL Hessian-vector product
            adapted, path = objective.adapt(theta, inner)
            problem = objective.outer_problem(path, inner, adapted, outer)
            _, gradient = problem.surrogate_and_gradient()
            hvp = problem.kl_hvp(gradient)
            grads[device] = th.cat([g.reshape(-1) for g in gradient.values()]).cpu()
            hvps[device] = th.cat([h.reshape(-1) for h in hvp.values()]).cpu()
        for what, values in (("meta-gradient", grads), ("KL Hessian-vector product", hvps)):
            err = float((values["cpu"] - values[dev]).abs().max() / values["cpu"].abs().max())
            ok &= check(f"{what} {dev} == cpu (first_order={first_order})", err < 1e-8, f"(relative error {err:.1e})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
