"""A meta-iteration is all or nothing: checkpoints written during it resume bit for bit, an exception undoes it.

``CheckpointCallback`` saves after an env step, in the middle of a meta-iteration: the checkpoint records the
model as the iteration found it, so that training resumed from it reruns that iteration. An exception in an
iteration (an env error, Ctrl-C) leaves the parameters, ``num_timesteps`` and every RNG state as they were.
"""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest
import torch as th
from conftest import FAST_TRPO, params_equal, point_mass, small_kwargs
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback

from sb3_meta import FOMAML, MAML, Reptile
from sb3_meta.common.rng import get_rng_state

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


class FailAt(BaseCallback):
    """Raises ``error`` at the ``at``-th env step, after doing ``before_raising`` (e.g. breaking the policy)."""

    def __init__(self, at: int, error: BaseException, before_raising=None) -> None:
        super().__init__()
        self.at, self.error, self.before_raising = at, error, before_raising

    def _on_step(self) -> bool:
        if self.n_calls == self.at:
            if self.before_raising is not None:
                self.before_raising(self.model)
            raise self.error
        return True


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
