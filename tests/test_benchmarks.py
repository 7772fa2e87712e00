"""The profiler of ``benchmarks/profile_iteration.py``: its parts nest as the code does, and it leaves nothing patched;
the CPU clock of ``benchmarks/ray_step_budget.py``."""

from __future__ import annotations

import argparse
import os
import sys

import pytest

pytest.importorskip("mujoco")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import profile_iteration

from sb3_meta.common import adaptation, meta_gradient
from sb3_meta.maml import maml as maml_module


def test_profile_parts_nest_and_the_wrapped_functions_are_restored():
    originals = (adaptation.collect_task_batch, meta_gradient.OuterProblem.kl_hvp, maml_module.trpo_step)
    args = argparse.Namespace(meta_batch_size=2, fast_batch_size=2, iterations=2, warmup=0)
    rows = profile_iteration.profile("halfcheetahdir", "FOMAML", 1, args)
    assert len(rows) == 2
    for row in rows:
        # physics ⊂ VecEnv step ⊂ sampling pass ⊂ the iteration's sampling time: each remainder is non-negative
        assert 0 < row["physics"] and row["vecenv_other"] >= 0 and row["rollout_other"] >= 0 and row["sampling_other"] >= 0
        # the conjugate gradient's products: cg_max_steps (10) iterations, and one for the step length's xᵀAx unless
        # the recorded products reproduce it
        assert 10 <= row["n_fisher_products"] <= 11
        assert row["fisher_products"] > 0 and row["cg_and_line_search"] >= 0 and row["meta_step_other"] >= -1e-3
        assert row["env_steps"] == 2 * 2 * 2 * 200  # two passes of 4 sub-envs, HalfCheetah's 200 steps
    assert (adaptation.collect_task_batch, meta_gradient.OuterProblem.kl_hvp, maml_module.trpo_step) == originals


@pytest.mark.skipif(not os.path.exists(f"/proc/{os.getpid()}/stat"), reason="reads /proc (Linux)")
def test_ray_step_budget_reads_the_cpu_time_a_process_spent():
    """``ray_step_budget.cpu_seconds`` (user + system time from /proc) moves with this process's own CPU clock."""
    import time

    import ray_step_budget

    (before,), clock_before = ray_step_budget.cpu_seconds([os.getpid()]), time.process_time()
    deadline = time.process_time() + 0.5
    while time.process_time() < deadline:  # half a second of CPU
        pass
    (after,), clock_after = ray_step_budget.cpu_seconds([os.getpid()]), time.process_time()
    spent = clock_after - clock_before
    assert spent >= 0.5 and abs((after - before) - spent) < 0.05 + 0.05 * spent  # /proc counts in clock ticks
