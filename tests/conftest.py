"""Shared fixtures and helpers of the algorithm tests: tiny policies, tiny task distributions, float64 batches."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from torch import nn

from sb3_meta import FOMAML
from sb3_meta.common.meta_gradient import flatten
from sb3_meta.common.policies import MetaActorCriticPolicy, Params
from sb3_meta.common.rollout import TaskBatch, collect_task_batch
from sb3_meta.envs import PointMassTasks, make_task_vec_env
from sb3_meta.envs.bandit import BanditTasks

# The tests run tiny networks: torch's intra-op threads only add synchronisation, which on a few shared cores
# makes each small op up to ~100x slower (measured: one meta-objective evaluation 1 ms on 1 thread, 140 ms on 2).
th.set_num_threads(1)

#: A one-hidden-layer actor, no critic layers: fast to build and to differentiate.
TINY_POLICY_KWARGS = dict(net_arch=dict(pi=[16], vf=[]))
#: Smooth activation for finite-difference checks (ReLU kinks break central differences).
SMOOTH_POLICY_KWARGS = dict(net_arch=dict(pi=[8], vf=[]), activation_fn=nn.Tanh)
HORIZON = 10


def point_mass(**kwargs) -> PointMassTasks:
    """A short point-mass distribution whose episodes never terminate early (fixed length HORIZON)."""
    kwargs.setdefault("max_episode_steps", HORIZON)
    kwargs.setdefault("goal_radius", 0.0)
    return PointMassTasks(**kwargs)


def bandit(**kwargs) -> BanditTasks:
    """A small Discrete task distribution (runs through the DummyVecEnv fallback)."""
    kwargs.setdefault("n_arms", 3)
    kwargs.setdefault("horizon", 5)
    return BanditTasks(**kwargs)


def small_kwargs(**overrides) -> dict:
    """Constructor arguments of a small, seeded meta-learner."""
    kwargs = dict(meta_batch_size=2, fast_batch_size=2, seed=0, policy_kwargs=TINY_POLICY_KWARGS)
    kwargs.update(overrides)
    return kwargs


def params_equal(a: Params, b: Params) -> bool:
    """Bitwise equality of two parameter sets."""
    return a.keys() == b.keys() and all(th.equal(a[k], b[k]) for k in a)


def max_abs_diff(a: Params, b: Params) -> float:
    return float((flatten(a) - flatten(b)).abs().max())


def float64_policy(env, seed: int = 0, **policy_kwargs) -> MetaActorCriticPolicy:
    """A float64 meta-policy built directly (for gradient checks)."""
    th.manual_seed(seed)
    kwargs = dict(SMOOTH_POLICY_KWARGS)
    kwargs.update(policy_kwargs)
    policy = MetaActorCriticPolicy(env.observation_space, env.action_space, lambda _: 1e-3, **kwargs)
    return policy.double()


def collect_float64(venv, policy, tasks, episodes, params, per_task, horizon, gamma=0.99, gae_lambda=1.0) -> TaskBatch:
    """Sample a batch and convert it to float64 before computing the advantages."""
    batch = collect_task_batch(venv, policy, tasks, episodes, params, per_task, horizon)
    assert batch is not None
    batch.obs, batch.rewards, batch.mask = batch.obs.double(), batch.rewards.double(), batch.mask.double()
    if batch.actions.is_floating_point():
        batch.actions = batch.actions.double()
    batch.compute_advantages(gamma, gae_lambda)
    return batch


@pytest.fixture
def point_mass_setup():
    """(env, venv, policy, tasks) for a float64 point-mass problem: 2 tasks x 3 episodes x 8 steps."""
    env = point_mass(max_episode_steps=8, seed=0)
    k, e = 2, 3
    venv = make_task_vec_env(env, k * e, seed=0)
    policy = float64_policy(env)
    return env, venv, policy, env.sample_tasks(k), e


@pytest.fixture
def bandit_setup():
    """(env, venv, policy, tasks) for a float64 bandit problem: 2 tasks x 4 episodes x 5 pulls."""
    env = bandit(seed=0, reward="gaussian", noise_std=0.5)
    k, e = 2, 4
    venv = make_task_vec_env(env, k * e, seed=0)
    policy = float64_policy(env)
    return env, venv, policy, env.sample_tasks(k), e


def assert_finite(x: np.ndarray | th.Tensor) -> None:
    assert np.all(np.isfinite(np.asarray(x)))


# --- shared by the evaluation, callback, baseline and example tests ---------------------------------------
EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


FAST_TRPO = dict(cg_max_steps=3, line_search_max_iter=5)


#: SB3 policies whose actor is the tiny meta-policy's (one hidden layer of 16 units)
SB3_TINY = dict(net_arch=dict(pi=[16], vf=[16]))


def fomaml(**kwargs) -> FOMAML:
    return FOMAML("MlpPolicy", point_mass(start="origin"), **small_kwargs(**FAST_TRPO, **kwargs))


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script runs
    spec.loader.exec_module(module)
    return module


def global_rng_states() -> tuple:
    return th.get_rng_state(), np.random.get_state()[1].copy()


def assert_same_global_rngs(before: tuple) -> None:
    after = global_rng_states()
    assert th.equal(before[0], after[0])
    assert np.array_equal(before[1], after[1])


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
