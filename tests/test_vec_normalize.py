"""SB3's ``VecNormalize`` around a task VecEnv: training, adaptation, evaluation, checkpoints.

The statistics belong to the model: training updates them, adaptation samples with them frozen, checkpoints carry
them (so that resuming is bit for bit, also from a checkpoint written mid-iteration, and a model loaded without an
env adapts as the live one), and returns are reported in the env's own rewards.
"""

from __future__ import annotations

import glob
import io
import os

import numpy as np
import pytest
import torch as th
from conftest import FAST_TRPO, HORIZON, FailAt, params_equal, point_mass, small_kwargs
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecMonitor, VecNormalize

from sb3_meta import FOMAML, MAML, Reptile, evaluate_adaptation
from sb3_meta.common.normalization import NormalizationState
from sb3_meta.common.rollout import collect_task_batch
from sb3_meta.envs import make_task_vec_env

ALGOS = {"FOMAML": (FOMAML, FAST_TRPO), "MAML": (MAML, FAST_TRPO), "Reptile": (Reptile, {})}
N_ENVS = small_kwargs()["meta_batch_size"] * small_kwargs()["fast_batch_size"]


def normalized_venv(**kwargs) -> VecNormalize:
    return VecNormalize(make_task_vec_env(point_mass(seed=3), N_ENVS, seed=3), **kwargs)


def make(name: str, **vec_normalize_kwargs):
    cls, extra = ALGOS[name]
    return cls("MlpPolicy", normalized_venv(**vec_normalize_kwargs), **small_kwargs(seed=5), **extra)


def iterate(model, n: int):
    for _ in range(n):
        model.learn(1, reset_num_timesteps=False)  # one meta-iteration per call
    return model


def same_statistics(a: NormalizationState, b: NormalizationState) -> bool:
    return (
        np.array_equal(a.obs_rms.mean, b.obs_rms.mean)
        and np.array_equal(a.obs_rms.var, b.obs_rms.var)
        and a.obs_rms.count == b.obs_rms.count
        and np.array_equal(a.ret_rms.var, b.ret_rms.var)
        and a.ret_rms.count == b.ret_rms.count
    )


def test_a_pass_samples_normalised_observations_and_rewards_and_reports_the_envs_returns():
    """Against hand computation: with an action mean that ignores the observation (zero weights), both VecEnvs see
    the same trajectory, and the normalised one must give (o - μ) / sqrt(σ² + ε) clipped, r / sqrt(σ_R² + ε) clipped,
    and the raw returns."""
    env = point_mass(seed=0)
    model = FOMAML("MlpPolicy", env, **small_kwargs())
    params = {k: (th.zeros_like(v) if k.endswith("weight") else v) for k, v in model.meta_parameters().items()}
    tasks = env.sample_tasks(2)
    raw_venv = make_task_vec_env(env, 4, seed=1)
    norm_venv = VecNormalize(make_task_vec_env(env, 4, seed=1), training=False, clip_obs=1.5, clip_reward=1.0)
    norm_venv.obs_rms.mean, norm_venv.obs_rms.var = np.array([0.3, -0.2]), np.array([4.0, 0.25])
    norm_venv.ret_rms.var = np.array(0.09)
    batches = []
    for venv in (raw_venv, norm_venv):
        th.manual_seed(0)
        batches.append(collect_task_batch(venv, model.policy, tasks, 2, params, False, HORIZON))
    raw, norm = batches
    assert th.equal(raw.actions, norm.actions)  # the same trajectory
    expected_obs = np.clip((raw.obs.double().numpy() - [0.3, -0.2]) / np.sqrt(np.array([4.0, 0.25]) + 1e-8), -1.5, 1.5)
    mask = raw.mask.numpy()[..., None] > 0
    np.testing.assert_allclose(norm.obs.numpy(), np.where(mask, expected_obs, 0.0), rtol=1e-6, atol=1e-6)
    expected_rewards = np.clip(raw.rewards.double().numpy() / np.sqrt(0.09 + 1e-8), -1.0, 1.0)
    np.testing.assert_allclose(norm.rewards.numpy(), expected_rewards, rtol=1e-6, atol=1e-6)
    assert (np.abs(norm.rewards.numpy()) == 1.0).any()  # clipping happened: the learning rewards are not the raw ones
    assert th.equal(norm.episode_returns(), raw.episode_returns())


class EpisodeReturns(BaseCallback):
    def __init__(self) -> None:
        super().__init__()
        self.returns: list[float] = []

    def _on_step(self) -> bool:
        self.returns += [info["episode"]["r"] for info in self.locals["infos"] if "episode" in info]
        return True


@pytest.mark.parametrize("name", sorted(ALGOS))
def test_training_updates_the_statistics_and_logs_the_envs_returns(name):
    # learning rewards clipped hard, far from the env's own; the VecMonitor below the VecNormalize, as in SB3
    venv = VecNormalize(VecMonitor(make_task_vec_env(point_mass(seed=3), N_ENVS, seed=3)), clip_reward=0.01)
    cls, extra = ALGOS[name]
    model = cls("MlpPolicy", venv, **small_kwargs(seed=5), **extra)
    assert model.get_env() is venv  # the user's chain as given (SB3's sync_envs_normalization walks it)
    seen = EpisodeReturns()
    model.learn(1, callback=seen)
    stats = model.normalization
    assert stats is not None and stats.obs_rms.count > model.num_timesteps  # every step (and reset) counted
    logged = sorted(ep["r"] for ep in model.ep_info_buffer)
    assert len(seen.returns) == len(logged) == N_ENVS * model.sampling_passes
    np.testing.assert_allclose(sorted(seen.returns), logged, rtol=1e-5)
    assert min(logged) < -0.01 * HORIZON  # the env's own point-mass returns, not clipped ones


@pytest.mark.parametrize("name", sorted(ALGOS))
def test_save_load_resumes_bit_for_bit_with_the_checkpoints_statistics(tmp_path, name):
    uninterrupted = iterate(make(name), 2)
    model = iterate(make(name), 1)
    model.save(tmp_path / "model.zip")
    # a fresh VecNormalize (statistics at zero): the checkpoint's are put into it
    resumed = type(model).load(tmp_path / "model.zip", env=normalized_venv())
    assert same_statistics(resumed.normalization, model.normalization)
    iterate(resumed, 1)
    assert params_equal(resumed.meta_parameters(), uninterrupted.meta_parameters())
    assert same_statistics(resumed.normalization, uninterrupted.normalization)


def test_a_checkpoint_written_mid_iteration_holds_the_statistics_of_the_iteration_start(tmp_path):
    uninterrupted = iterate(make("FOMAML"), 3)
    model = iterate(make("FOMAML"), 1)
    at_start = model.normalization
    model.learn(1, reset_num_timesteps=False, callback=CheckpointCallback(7, str(tmp_path), name_prefix="ck"))
    last = max(glob.glob(os.path.join(tmp_path, "ck_*.zip")), key=os.path.getmtime)
    resumed = FOMAML.load(last, env=normalized_venv())
    assert same_statistics(resumed.normalization, at_start)
    assert not same_statistics(model.normalization, at_start)
    iterate(resumed, 2)
    assert params_equal(resumed.meta_parameters(), uninterrupted.meta_parameters())
    assert same_statistics(resumed.normalization, uninterrupted.normalization)


def test_an_exception_mid_iteration_puts_the_statistics_back():
    uninterrupted = iterate(make("FOMAML"), 2)
    model = iterate(make("FOMAML"), 1)
    before = model.normalization
    with pytest.raises(RuntimeError, match="env lost"):
        model.learn(1, reset_num_timesteps=False, callback=FailAt(13, RuntimeError("env lost")))
    assert same_statistics(model.normalization, before)
    iterate(model, 1)
    assert params_equal(model.meta_parameters(), uninterrupted.meta_parameters())


def test_adaptation_uses_frozen_statistics_and_a_model_loaded_without_env_adapts_as_the_live_one():
    model = iterate(make("FOMAML"), 2)
    before = model.normalization
    result = evaluate_adaptation(model, point_mass(), n_tasks=3, n_steps=1, n_episodes=2, seed=0)
    task = model.task_env.sample_tasks(1)[0]
    adapted = model.adapt(task, steps=1, seed=0)
    assert same_statistics(model.normalization, before)  # adapting does not move them
    assert same_statistics(adapted.normalization, before)  # the adapted model keeps them (loaded without env)
    # adapt samples as evaluate_adaptation does (the same normalised observations, the same episodes)
    one = evaluate_adaptation(model, model.adaptation_env, tasks=[task], n_steps=1, n_episodes=2, seed=0)
    np.testing.assert_array_equal(adapted.adaptation_returns, one.returns[0])
    buffer = io.BytesIO()
    model.save(buffer)
    buffer.seek(0)
    loaded = FOMAML.load(buffer)
    assert loaded.env is None and same_statistics(loaded.normalization, before)
    again = evaluate_adaptation(loaded, point_mass(), n_tasks=3, n_steps=1, n_episodes=2, seed=0)
    np.testing.assert_array_equal(again.returns, result.returns)
    # without the statistics the same model adapts differently: they matter
    loaded._normalization = None
    plain = evaluate_adaptation(loaded, point_mass(), n_tasks=3, n_steps=1, n_episodes=2, seed=0)
    assert not np.array_equal(plain.returns, result.returns)


def test_an_env_without_vec_normalize_is_refused_for_a_model_trained_with_it(tmp_path):
    model = iterate(make("FOMAML"), 1)
    model.save(tmp_path / "model.zip")
    with pytest.raises(ValueError, match=r"trained with VecNormalize.*load has none"):
        FOMAML.load(tmp_path / "model.zip", env=point_mass())
    before = model.normalization
    with pytest.raises(ValueError, match=r"trained with VecNormalize.*set_env has none"):
        model.set_env(point_mass())
    assert model.get_vec_normalize_env() is not None and same_statistics(model.normalization, before)
    loaded = FOMAML.load(tmp_path / "model.zip")
    loaded.set_env(normalized_venv())  # the checkpoint's statistics go into the new VecNormalize
    assert same_statistics(loaded.normalization, before)


def test_set_env_carries_the_models_statistics_into_the_new_vec_normalize():
    model = iterate(make("FOMAML"), 1)
    before = model.normalization
    new = normalized_venv()
    model.set_env(new)
    assert model.get_vec_normalize_env() is new and same_statistics(model.normalization, before)


def test_evaluate_adaptation_applies_an_sb3_models_vec_normalize():
    venv = VecNormalize(make_task_vec_env(point_mass(seed=0), 4, seed=0))
    ppo = PPO("MlpPolicy", venv, n_steps=HORIZON, batch_size=20, n_epochs=1, seed=0, policy_kwargs=dict(net_arch=[8]))
    ppo.learn(4 * HORIZON)
    before = NormalizationState.of(venv)
    result = evaluate_adaptation(ppo, point_mass(), n_tasks=2, n_steps=1, n_episodes=2, seed=0)
    assert same_statistics(NormalizationState.of(venv), before)
    venv.obs_rms.var = venv.obs_rms.var * 100  # other statistics, other observations: the evaluation uses them
    other = evaluate_adaptation(ppo, point_mass(), n_tasks=2, n_steps=1, n_episodes=2, seed=0)
    assert not np.array_equal(other.returns, result.returns)


def test_statistics_round_trip_through_json_exactly():
    venv = normalized_venv()
    venv.obs_rms.update(np.random.default_rng(0).normal(size=(7, 2)) / 3)
    state = NormalizationState.of(venv)
    again = NormalizationState.from_json(state.to_json())
    assert same_statistics(again, state) and again.clip_obs == state.clip_obs and again.norm_reward is True
    with pytest.raises(ValueError, match="incomplete or malformed"):
        NormalizationState.from_json({**state.to_json(), "ret_rms": None})


def test_vec_normalize_around_an_sb3_vec_env_of_task_distributions():
    venv = VecNormalize(make_vec_env("sb3_meta/PointMass-v0", n_envs=N_ENVS, seed=0))
    model = FOMAML("MlpPolicy", venv, **small_kwargs(max_episode_steps=HORIZON), **FAST_TRPO)
    model.learn(1)
    assert model.get_vec_normalize_env() is venv and model.normalization.obs_rms.count > model.num_timesteps
    before = model.normalization
    adapted = model.adapt(model.task_env.sample_tasks(1)[0], steps=1, seed=0)
    assert same_statistics(model.normalization, before) and same_statistics(adapted.normalization, before)


@pytest.mark.parametrize("chain", ["make_task_vec_env", "make_vec_env", "make_vec_env-subproc"])
def test_sb3_eval_callback_synchronises_its_vec_normalize_with_the_model(chain):
    """SB3's habit: an eval env wrapped as the training env; EvalCallback copies the statistics into it. Its
    sync_envs_normalization walks both chains in step, so the model must not add a layer to an SB3 chain either."""
    if chain == "make_task_vec_env":
        model = make("FOMAML")
        eval_env = VecNormalize(make_task_vec_env(point_mass(seed=9), 2, seed=9), training=False, norm_reward=False)
    else:
        # A SubprocVecEnv worker under pytest has not imported sb3_meta (no registered ids): it gets a factory
        env_id = (lambda: point_mass()) if chain.endswith("subproc") else "sb3_meta/PointMass-v0"
        vec_env_cls = SubprocVecEnv if chain.endswith("subproc") else DummyVecEnv
        venv = VecNormalize(make_vec_env(env_id, n_envs=N_ENVS, seed=0, vec_env_cls=vec_env_cls))
        model = FOMAML("MlpPolicy", venv, **small_kwargs(seed=5, max_episode_steps=HORIZON), **FAST_TRPO)
        assert model.get_env() is venv  # the user's chain, objects kept: their venv.save() has the statistics
        eval_env = VecNormalize(make_vec_env("sb3_meta/PointMass-v0", n_envs=2, seed=9), training=False, norm_reward=False)
    callback = EvalCallback(eval_env, eval_freq=1, n_eval_episodes=2, warn=False)
    model.learn(1, callback=callback)
    assert callback.last_mean_reward < 0  # it evaluated (point-mass returns are negative distances)
    assert model.get_vec_normalize_env().obs_rms.count > model.num_timesteps  # trained statistics, not a fresh one
    np.testing.assert_array_equal(eval_env.obs_rms.mean, model.get_vec_normalize_env().obs_rms.mean)
    assert eval_env.obs_rms.count == model.get_vec_normalize_env().obs_rms.count
    model.get_env().close()


def test_reward_normalisation_alone(tmp_path):
    model = iterate(make("FOMAML", norm_obs=False), 1)
    assert model.normalization.obs_rms is None and model.normalization.ret_rms.count > 1
    model.save(tmp_path / "model.zip")
    loaded = FOMAML.load(tmp_path / "model.zip")
    assert loaded.normalization.obs_rms is None and loaded.normalization.ret_rms.var == model.normalization.ret_rms.var
    live = evaluate_adaptation(model, point_mass(), n_tasks=2, n_steps=1, n_episodes=2, seed=0)
    again = evaluate_adaptation(loaded, point_mass(), n_tasks=2, n_steps=1, n_episodes=2, seed=0)
    np.testing.assert_array_equal(again.returns, live.returns)


@pytest.mark.parametrize("vec_env_cls", ["batched", "dummy"])
def test_the_statistics_count_the_steps_training_keeps_not_padding(vec_env_cls):
    """Episodes that end early leave their sub-env idle (batched) or running a discarded episode (SB3's VecEnvs)
    until the pass ends: the statistics count every reset and the steps of the episodes, nothing else."""
    env = point_mass(seed=3, goal_radius=0.2, goal_range=0.5)
    venv = VecNormalize(make_task_vec_env(env, N_ENVS, seed=3, vec_env_cls=vec_env_cls))
    model = FOMAML("MlpPolicy", venv, **small_kwargs(seed=5), **FAST_TRPO)
    model.learn(1)
    lengths = [ep["l"] for ep in model.ep_info_buffer]
    assert min(lengths) < max(lengths)  # episodes ended at different steps: padding in between
    resets = N_ENVS * model.sampling_passes
    assert model.normalization.obs_rms.count == pytest.approx(1e-4 + resets + sum(lengths), abs=1e-6)
    assert model.normalization.ret_rms.count == pytest.approx(1e-4 + sum(lengths), abs=1e-6)
    assert venv.training


def test_callbacks_save_a_vec_normalize_in_training_mode_that_resumes_bit_for_bit(tmp_path):
    """SB3's habit: CheckpointCallback(save_vecnormalize=True), then VecNormalize.load for the resumed run."""
    uninterrupted = iterate(make("FOMAML"), 3)
    model = iterate(make("FOMAML"), 1)
    callback = CheckpointCallback(7, str(tmp_path), name_prefix="ck", save_vecnormalize=True)
    model.learn(1, reset_num_timesteps=False, callback=callback)  # the last save is mid-iteration
    last = max(glob.glob(os.path.join(tmp_path, "ck_*_steps.zip")), key=os.path.getmtime)
    stats = max(glob.glob(os.path.join(tmp_path, "ck_vecnormalize_*.pkl")), key=os.path.getmtime)
    env = VecNormalize.load(stats, make_task_vec_env(point_mass(seed=3), N_ENVS, seed=3))
    assert env.training  # it would freeze the statistics of the resumed run otherwise
    resumed = iterate(FOMAML.load(last, env=env), 2)
    assert params_equal(resumed.meta_parameters(), uninterrupted.meta_parameters())
    assert same_statistics(resumed.normalization, uninterrupted.normalization)
