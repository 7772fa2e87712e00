"""A meta-iteration is all or nothing: checkpoints written during it resume bit for bit, an exception undoes it.

``CheckpointCallback`` saves after an env step, in the middle of a meta-iteration: the checkpoint records the
model as the iteration found it, so that training resumed from it reruns that iteration. An exception in an
iteration (an env error, Ctrl-C) leaves the parameters, ``num_timesteps`` and every RNG state as they were.
"""

from __future__ import annotations

import glob
import os
import signal

import numpy as np
import pytest
import torch as th
from conftest import FAST_TRPO, FailAt, params_equal, point_mass, small_kwargs
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import SubprocVecEnv

from sb3_meta import FOMAML, MAML, Reptile
from sb3_meta.common.rng import get_rng_state
from sb3_meta.envs import VecEnvLostError

ALGOS = {"FOMAML": (FOMAML, FAST_TRPO), "MAML": (MAML, FAST_TRPO), "Reptile": (Reptile, {})}


def make(name: str):
    cls, extra = ALGOS[name]
    return cls("MlpPolicy", point_mass(), **small_kwargs(seed=5), **extra)


def iterate(model, n: int):
    for _ in range(n):
        model.learn(1, reset_num_timesteps=False)  # one meta-iteration per call
    return model


@pytest.mark.parametrize("name", sorted(ALGOS))
def test_a_checkpoint_written_mid_iteration_resumes_as_an_uninterrupted_run(tmp_path, name):
    uninterrupted = iterate(make(name), 3)
    model = iterate(make(name), 1)
    # saves after every 7th env step of iteration 2: the last one is in the middle of that iteration's sampling
    model.learn(1, reset_num_timesteps=False, callback=CheckpointCallback(7, str(tmp_path), name_prefix="ck"))
    last = max(glob.glob(os.path.join(tmp_path, "ck_*.zip")), key=os.path.getmtime)
    resumed = type(model).load(last, env=point_mass())
    assert resumed.n_iterations == 1 and resumed.num_timesteps == uninterrupted.num_timesteps // 3
    iterate(resumed, 2)
    assert params_equal(resumed.meta_parameters(), uninterrupted.meta_parameters())
    assert resumed.num_timesteps == uninterrupted.num_timesteps
    assert model.num_timesteps == 2 * uninterrupted.num_timesteps // 3  # the live model counts as SB3 does


def state_of(model):
    rngs = get_rng_state(model.task_env, model.env, model._torch_stream)
    return model.num_timesteps, {k: v.detach().clone() for k, v in model.policy.state_dict().items()}, rngs


def assert_same_state(a, b):
    assert a[0] == b[0]
    assert a[1].keys() == b[1].keys() and all(th.equal(a[1][k], b[1][k]) for k in a[1])
    assert th.equal(a[2]["torch"], b[2]["torch"]) and a[2]["task_sampler"] == b[2]["task_sampler"]
    assert a[2]["vec_env"]["sub_envs"] == b[2]["vec_env"]["sub_envs"]


@pytest.mark.parametrize("name", sorted(ALGOS))
def test_an_exception_mid_iteration_leaves_the_model_as_it_found_it(name):
    uninterrupted = iterate(make(name), 2)
    model = iterate(make(name), 1)
    before = state_of(model)
    with pytest.raises(RuntimeError, match="env lost"):
        model.learn(1, reset_num_timesteps=False, callback=FailAt(13, RuntimeError("env lost")))
    assert_same_state(state_of(model), before)
    iterate(model, 1)  # training goes on as if the failed iteration had never started
    assert params_equal(model.meta_parameters(), uninterrupted.meta_parameters())


def test_ctrl_c_inside_the_functional_actor_leaves_a_usable_model(tmp_path):
    """An interrupt while ``torch.func.functional_call`` swaps the parameters back leaves a name holding the call's
    tensor (seen with real Ctrl-C); the interrupted iteration puts the parameter objects back."""
    uninterrupted = iterate(make("FOMAML"), 2)
    model = iterate(make("FOMAML"), 1)
    layer = model.policy.mlp_extractor.policy_net[0]
    weight = layer.weight

    def break_the_policy(model) -> None:
        layer._parameters["weight"] = th.zeros_like(weight)  # not the parameter: what the interrupted call left

    with pytest.raises(KeyboardInterrupt):
        model.learn(1, reset_num_timesteps=False, callback=FailAt(5, KeyboardInterrupt(), break_the_policy))
    assert layer._parameters["weight"] is weight
    model.save(tmp_path / "after_ctrl_c.zip")
    model.predict(np.zeros(2, dtype=np.float32), deterministic=True)  # (a sampled one would draw from its stream)
    iterate(model, 1)
    assert params_equal(model.meta_parameters(), uninterrupted.meta_parameters())


def subproc_model(seed=0):
    venv = make_vec_env(lambda: point_mass(), n_envs=4, seed=seed, vec_env_cls=SubprocVecEnv)
    return FOMAML("MlpPolicy", venv, **small_kwargs(seed=5), **FAST_TRPO)


class KillAWorker(BaseCallback):
    """SIGKILLs SubprocVecEnv worker 1 after the ``at``-th env step: the next step fails in SB3's pipe."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def _on_step(self) -> bool:
        if self.n_calls == self.at:
            inner = self.model.env
            while not hasattr(inner, "processes"):
                inner = inner.venv
            os.kill(inner.processes[1].pid, signal.SIGKILL)
            inner.processes[1].join()
        return True


def test_a_subproc_worker_killed_mid_iteration_gives_a_clear_error_and_a_checkpoint_that_resumes(tmp_path):
    uninterrupted = iterate(subproc_model(), 2)
    uninterrupted.env.close()
    model = iterate(subproc_model(), 1)
    before = state_of(model)
    with pytest.raises(VecEnvLostError, match=r"could not be put back.*save the model"):
        model.learn(1, reset_num_timesteps=False, callback=KillAWorker(5))
    assert model.num_timesteps == before[0]
    assert all(th.equal(before[1][k], v) for k, v in model.policy.state_dict().items())
    model.save(tmp_path / "after_the_worker_died.zip")  # the iteration's start, the VecEnv's RNG states included
    new_venv = make_vec_env(lambda: point_mass(), n_envs=4, vec_env_cls=SubprocVecEnv)  # unseeded: the checkpoint's
    resumed = iterate(FOMAML.load(tmp_path / "after_the_worker_died.zip", env=new_venv), 1)
    assert params_equal(resumed.meta_parameters(), uninterrupted.meta_parameters())
    resumed.env.close()
    inner = model.env
    while not hasattr(inner, "processes"):
        inner = inner.venv
    for process in inner.processes:  # the broken VecEnv's other workers (SB3's close would wait on the dead one)
        process.terminate()
        process.join()
