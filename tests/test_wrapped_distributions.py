"""A model adapts on the env it was trained on: the task distribution with its wrappers, however it was given.

``adapt`` and ``adapt_tasks`` (without ``env=``) sample copies of the model's :attr:`adaptation_env`, which keeps
the wrappers of the env passed at construction (a reward transform, an oracle observation, a registered oracle
id, the sub-envs of an SB3 ``DummyVecEnv`` / ``SubprocVecEnv``); the model's task sampler is the unwrapped
distribution under it, seeded by the model's seed.
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from conftest import HORIZON, params_equal, point_mass, small_kwargs
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnvWrapper, VecMonitor, VecNormalize

from sb3_meta import FOMAML
from sb3_meta.envs import OracleObservation, PointMassTasks, make_task_vec_env

FAST = dict(**small_kwargs(seed=0), cg_max_steps=3, line_search_max_iter=5)
SCALE = 10.0


def scaled(env: gym.Env) -> gym.Env:
    return gym.wrappers.TransformReward(env, lambda r: SCALE * r)


def test_adapt_tasks_uses_the_reward_wrapper_the_model_was_trained_with():
    """Returns on the model's own distribution are SCALE x those on the unwrapped one (same episodes)."""
    model = FOMAML("MlpPolicy", scaled(point_mass(seed=1)), **FAST)
    tasks = point_mass(seed=7).sample_tasks(3)
    _, own = model.adapt_tasks(tasks, n_steps=0, n_episodes=2, seed=0)
    _, plain = model.adapt_tasks(tasks, n_steps=0, n_episodes=2, seed=0, env=point_mass())
    np.testing.assert_allclose(own, SCALE * plain, rtol=1e-5)
    adapted = model.adapt(tasks[0], steps=1, seed=0)  # the task is applied to a copy of the wrapped env
    _, explicit = model.adapt_tasks(tasks[:1], n_steps=1, seed=0, env=scaled(point_mass()))
    np.testing.assert_array_equal(adapted.adaptation_returns, explicit[0])
    assert isinstance(adapted.adaptation_env, gym.wrappers.TransformReward)
    assert adapted.task_env.get_task() == tasks[0]
    assert model.task_env is model.adaptation_env.unwrapped  # the model samples with the unwrapped distribution


@pytest.mark.parametrize("given", ["wrapper", "registered_id", "dummy_vec_env"])
def test_a_model_of_the_oracle_form_adapts_on_the_oracle_form(given):
    """An oracle model's policy sees the task in its observation: adaptation must show it too (it used to sample
    the plain distribution and fail on the observation space)."""
    if given == "wrapper":
        env = OracleObservation(PointMassTasks())
    elif given == "registered_id":
        env = "sb3_meta/PointMassOracle-v0"
    else:
        env = make_vec_env("sb3_meta/PointMassOracle-v0", n_envs=4, vec_env_cls=DummyVecEnv)
    model = FOMAML("MlpPolicy", env, **FAST)
    tasks = point_mass(seed=7).sample_tasks(2)
    plain_size = PointMassTasks().observation_space.shape[0]
    assert model.observation_space.shape == (plain_size + tasks[0].as_array().size,)  # the task appended
    adapted = model.adapt(tasks[0], steps=1, seed=0)
    _, explicit = model.adapt_tasks(tasks[:1], n_steps=1, seed=0, env=OracleObservation(PointMassTasks()))
    np.testing.assert_allclose(adapted.adaptation_returns, explicit[0], rtol=1e-5)
    obs, _ = adapted.adaptation_env.reset(seed=0)
    np.testing.assert_array_equal(obs[plain_size:], np.asarray(tasks[0].as_array(), dtype=obs.dtype))  # the task is shown
    adapted.predict(obs, deterministic=True)


@pytest.mark.parametrize("vec_env_cls", ["batched", "dummy"])
def test_an_oracle_vec_env_model_adapts_on_the_oracle_form(vec_env_cls):
    from sb3_meta.envs import OracleVecEnv

    venv = OracleVecEnv(make_task_vec_env(point_mass(), 4, seed=0, vec_env_cls=vec_env_cls))
    model = FOMAML("MlpPolicy", venv, **FAST)
    assert isinstance(model.adaptation_env, OracleObservation)
    task = point_mass(seed=7).sample_tasks(1)[0]
    _, explicit = model.adapt_tasks([task], n_steps=1, seed=0, env=OracleObservation(point_mass()))
    _, own = model.adapt_tasks([task], n_steps=1, seed=0)
    np.testing.assert_array_equal(own, explicit)


def subproc_model(seed: int | None) -> FOMAML:
    venv = make_vec_env(lambda: point_mass(), n_envs=4, vec_env_cls=SubprocVecEnv)
    return FOMAML("MlpPolicy", venv, **{**FAST, "seed": seed})


def test_an_sb3_subproc_vec_env_model_samples_reproducible_tasks_and_adapts():
    """The model copies sub-env 0 out of its process: its seed covers task sampling, and adapt(task) works."""
    runs = []
    for _ in range(2):
        model = subproc_model(seed=4)
        try:
            assert model.task_env is not None
            first = model._sample_tasks(3)
            model.learn(1)
            runs.append((first, model.meta_parameters(), model.adapt(first[0], steps=1, seed=0).adaptation_returns))
        finally:
            model.env.close()
    (tasks_a, theta_a, returns_a), (tasks_b, theta_b, returns_b) = runs
    assert tasks_a == tasks_b
    assert params_equal(theta_a, theta_b)
    np.testing.assert_array_equal(returns_a, returns_b)
    other = subproc_model(seed=5)
    try:
        assert other._sample_tasks(3) != tasks_a
    finally:
        other.env.close()


def test_a_subproc_sub_env_that_cannot_be_pickled_gets_a_clear_error():
    venv = make_vec_env(lambda: scaled(point_mass()), n_envs=4, vec_env_cls=SubprocVecEnv)  # a lambda in a wrapper
    with pytest.raises(ValueError, match=r"Cannot copy sub-env 0 of the SubprocVecEnv.*lambdas.*VecEnv was closed"):
        FOMAML("MlpPolicy", venv, **FAST)
    assert venv.closed and not any(process.is_alive() for process in venv.processes)  # no worker left behind


def test_a_shorter_time_limit_sets_the_horizon():
    """gym.make(id, max_episode_steps=n) ends episodes after n steps: the model samples episodes of n steps."""
    short = HORIZON // 2
    model = FOMAML("MlpPolicy", gym.make("sb3_meta/PointMass-v0", max_episode_steps=short), **FAST)
    assert model._horizon() == short
    model.learn(1)
    # each sampling pass: meta_batch_size x fast_batch_size episodes of `short` steps
    assert model.num_timesteps == model.sampling_passes * 2 * 2 * short
    with pytest.warns(UserWarning, match="ends the episodes first"):  # it cannot lengthen them
        longer = FOMAML("MlpPolicy", gym.make("sb3_meta/PointMass-v0", max_episode_steps=10_000), **FAST)
    assert longer._horizon() == PointMassTasks().max_episode_steps  # the distribution's own limit comes first


def test_a_make_vec_env_model_does_not_warn_about_its_monitors():
    """SB3's make_vec_env wraps each sub-env in a Monitor; the model's VecMonitor counts the same episodes."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = FOMAML("MlpPolicy", make_vec_env(lambda: point_mass(), n_envs=4, vec_env_cls=DummyVecEnv), **FAST)
        model.learn(1)
    assert not [w for w in caught if "Monitor" in str(w.message)], [str(w.message) for w in caught]
    venv = model.get_env()
    assert venv.get_attr("task") == venv.get_tasks()  # as on the batched VecEnvs (the sub-envs have get_task())


class ScaledRewards(VecEnvWrapper):
    """A VecEnv wrapper that changes rewards: adaptation's fresh VecEnvs would not have it."""

    def reset(self):
        return self.venv.reset()

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        return obs, 10 * rewards, dones, infos


def test_a_vec_env_wrapper_that_adaptation_cannot_apply_is_warned_about():
    with pytest.warns(UserWarning, match="without the VecEnv wrapper\\(s\\) ScaledRewards"):
        FOMAML("MlpPolicy", ScaledRewards(make_task_vec_env(point_mass(), 4, seed=0)), **FAST)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the wrappers adaptation applies, or need not, give no warning
        FOMAML("MlpPolicy", VecNormalize(VecMonitor(make_task_vec_env(point_mass(), 4, seed=0))), **FAST)
