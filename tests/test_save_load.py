"""Checkpoints: predictions, parameters, hyperparameters and bit-identical resumption of training."""

from __future__ import annotations

import io

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from conftest import bandit, params_equal, point_mass, small_kwargs
from stable_baselines3 import PPO

from sb3_meta import FOMAML, MAML, Reptile
from sb3_meta.envs import make_task_vec_env

FAST_TRPO = dict(cg_max_steps=3, line_search_max_iter=5)
ALGOS = {
    "FOMAML": (FOMAML, FAST_TRPO),
    "MAML": (MAML, FAST_TRPO),
    "Reptile": (Reptile, dict(n_inner_steps=2)),
    # the original Reptile's variants: Adam (β1 = 0) inner steps, all on the first pass's episodes
    "Reptile-adam-reuse": (Reptile, dict(n_inner_steps=3, inner_lr=0.01, inner_optimizer="adam", reuse_inner_episodes=True)),
}


def obs_batch(model, n: int = 5) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, size=(n, *model.observation_space.shape)).astype(np.float32)


def roundtrip(model, env=None):
    buffer = io.BytesIO()
    model.save(buffer)
    buffer.seek(0)
    return type(model).load(buffer, env=env)


@pytest.mark.parametrize("make_env", [point_mass, bandit])
def test_save_load_predict(tmp_path, make_env):
    model = FOMAML("MlpPolicy", make_env(), **small_kwargs(), **FAST_TRPO)
    model.learn(1)
    model.save(tmp_path / "model.zip")
    loaded = FOMAML.load(tmp_path / "model.zip")  # no env: predict still works
    assert loaded.env is None
    obs = obs_batch(model)
    expected, _ = model.predict(obs, deterministic=True)
    actions, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_array_equal(actions, expected)
    assert params_equal(loaded.meta_parameters(), model.meta_parameters())
    with pytest.raises(ValueError, match="no env"):
        loaded.learn(1)


def test_get_and_set_parameters_roundtrip():
    model = Reptile("MlpPolicy", point_mass(), **small_kwargs(seed=0))
    other = Reptile("MlpPolicy", point_mass(), **small_kwargs(seed=1))
    assert not params_equal(model.meta_parameters(), other.meta_parameters())
    other.set_parameters(model.get_parameters())
    assert params_equal(model.meta_parameters(), other.meta_parameters())
    obs = obs_batch(model)
    np.testing.assert_array_equal(other.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])


def bandit_vec_env():
    return make_task_vec_env(bandit(), 2 * 2, seed=5)


ENVS = {"point_mass": point_mass, "bandit": bandit, "bandit_vec_env": bandit_vec_env}


@pytest.mark.parametrize(
    ("name", "env_name"),
    [
        ("FOMAML", "point_mass"),
        ("MAML", "point_mass"),
        ("Reptile", "point_mass"),
        ("Reptile-adam-reuse", "point_mass"),
        ("FOMAML", "bandit"),  # the DummyVecEnv fallback: per-sub-env RNGs in the checkpoint
        ("MAML", "bandit"),
        ("Reptile", "bandit"),
        ("FOMAML", "bandit_vec_env"),  # a task VecEnv passed in, rather than a task distribution
        ("Reptile", "bandit_vec_env"),
    ],
)
def test_resume_is_bit_identical(tmp_path, name, env_name):
    cls, extra = ALGOS[name]
    make_env = ENVS[env_name]
    straight = cls("MlpPolicy", make_env(), **small_kwargs(seed=5), **extra)
    history = [straight.meta_parameters()]
    for _ in range(2):
        straight.learn(1, reset_num_timesteps=False)
        history.append(straight.meta_parameters())
    # both iterations move the parameters (a rejected step would hide a difference in what it sampled)
    assert not params_equal(history[0], history[1]) and not params_equal(history[1], history[2])

    first = cls("MlpPolicy", make_env(), **small_kwargs(seed=5), **extra)
    first.learn(1)
    first.save(tmp_path / "checkpoint.zip")
    steps = first.num_timesteps
    del first
    th.manual_seed(12345)  # whatever happened in between: the checkpoint restores every RNG
    np.random.seed(12345)
    resumed = cls.load(tmp_path / "checkpoint.zip", env=make_env())
    assert resumed.num_timesteps == steps
    resumed.learn(1, reset_num_timesteps=False)

    assert params_equal(resumed.meta_parameters(), straight.meta_parameters())
    assert resumed.num_timesteps == straight.num_timesteps == 2 * steps


def test_hyperparameters_survive(tmp_path):
    model = MAML(
        "MlpPolicy",
        point_mass(),
        inner_lr=0.07,
        n_inner_steps=2,
        gamma=0.95,
        gae_lambda=0.9,
        target_kl=0.003,
        hvp="finite_difference",
        max_episode_steps=7,
        **small_kwargs(meta_batch_size=3, fast_batch_size=2),
    )
    model.num_timesteps = 1234
    model.save(tmp_path / "m.zip")
    loaded = MAML.load(tmp_path / "m.zip")
    assert type(loaded) is MAML
    for attr in [
        "inner_lr",
        "n_inner_steps",
        "gamma",
        "gae_lambda",
        "target_kl",
        "hvp",
        "first_order",
        "max_episode_steps",
        "meta_batch_size",
        "fast_batch_size",
        "cg_max_steps",
        "num_timesteps",
        "seed",
    ]:
        assert getattr(loaded, attr) == getattr(model, attr), attr
    assert loaded.policy_kwargs["net_arch"] == model.policy_kwargs["net_arch"]
    # FOMAML checkpoints load as FOMAML (also through MAML.load, its base class)
    fomaml = FOMAML("MlpPolicy", point_mass(), **small_kwargs())
    fomaml.save(tmp_path / "f.zip")
    assert type(FOMAML.load(tmp_path / "f.zip")) is FOMAML
    assert MAML.load(tmp_path / "f.zip").first_order


@pytest.mark.parametrize("name", ["FOMAML", "MAML", "Reptile"])
def test_load_with_a_new_seed_reseeds(tmp_path, name):
    """As SB3's ``load(path, env, seed=...)``: an explicit seed replaces the saved RNG states (reproducibly);
    without one, training resumes as if it had never stopped."""
    cls, extra = ALGOS[name]
    model = cls("MlpPolicy", point_mass(), **small_kwargs(seed=0), **extra)
    model.save(tmp_path / "m.zip")

    def trained(**kwargs):
        loaded = cls.load(tmp_path / "m.zip", env=point_mass(), **kwargs)
        loaded.learn(1)
        return loaded

    five, again, zero, resumed = trained(seed=5), trained(seed=5), trained(seed=0), trained()
    assert five.seed == 5
    assert params_equal(five.meta_parameters(), again.meta_parameters())
    assert not params_equal(five.meta_parameters(), zero.meta_parameters())
    model.learn(1)
    assert params_equal(resumed.meta_parameters(), model.meta_parameters())


@pytest.mark.parametrize("name", ["FOMAML", "Reptile"])
def test_load_with_new_batch_sizes(tmp_path, name):
    """``load(..., meta_batch_size=...)`` (as ``PPO.load(..., n_steps=...)``) samples with the new sizes, through
    an env made by load, a VecEnv of the new size or set_env; a VecEnv of the old size is refused clearly."""
    cls, extra = ALGOS[name]
    model = cls("MlpPolicy", point_mass(), **small_kwargs(), **extra)  # 2 tasks x 2 episodes
    model.save(tmp_path / "m.zip")
    passes = model.sampling_passes
    sizes = dict(meta_batch_size=3, fast_batch_size=1)
    for loaded in (
        cls.load(tmp_path / "m.zip", env=point_mass(), **sizes),
        cls.load(tmp_path / "m.zip", env=point_mass(), custom_objects=sizes),
        cls.load(tmp_path / "m.zip", env=make_task_vec_env(point_mass(), 3), **sizes),
    ):
        assert loaded.env.num_envs == 3
        loaded.learn(1)
        assert loaded.num_timesteps == passes * 3 * 10
    later = cls.load(tmp_path / "m.zip", **sizes)
    later.set_env(point_mass())
    later.learn(1)
    assert later.env.num_envs == 3 and later.num_timesteps == passes * 3 * 10
    with pytest.raises(ValueError, match="meta_batch_size x fast_batch_size = 3"):
        cls.load(tmp_path / "m.zip", env=make_task_vec_env(point_mass(), 4), **sizes)


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(inner_lr=-1.0), "inner_lr"),
        (dict(meta_batch_size=0), "meta_batch_size"),
        (dict(custom_objects={"fast_batch_size": -2}), "fast_batch_size"),
        (dict(target_kl=-1.0), "target_kl"),
        (dict(cg_damping=-0.5), "cg_damping"),
        (dict(sub_sampling_factor=0), "sub_sampling_factor"),
        (dict(learning_rate=0.5), "has no learning_rate to override; its step size is inner_lr"),  # not ignored
    ],
)
def test_load_checks_the_hyperparameters_it_is_given(tmp_path, bad, message):
    """SB3's load writes its kwargs into the model unchecked; the constructor's checks apply to them here."""
    FOMAML("MlpPolicy", point_mass(), **small_kwargs(), **FAST_TRPO).save(tmp_path / "m.zip")
    with pytest.raises(ValueError, match=message):
        FOMAML.load(tmp_path / "m.zip", env=point_mass(), **bad)
    with pytest.raises(ValueError, match="first order"):
        FOMAML.load(tmp_path / "m.zip", first_order=False)
    loaded = FOMAML.load(tmp_path / "m.zip", inner_lr=0.3)
    assert loaded.inner_lr == loaded.learning_rate == loaded.lr_schedule(1.0) == 0.3  # SB3's names follow inner_lr


def test_load_with_an_env_of_other_spaces(tmp_path):
    model = Reptile("MlpPolicy", bandit(), **small_kwargs())
    model.save(tmp_path / "m.zip")
    with pytest.raises(ValueError, match="does not match the checkpoint"):
        Reptile.load(tmp_path / "m.zip", env=point_mass())
    with pytest.raises(ValueError, match="does not match the checkpoint"):
        Reptile.load(tmp_path / "m.zip", env=bandit(n_arms=4))
    with pytest.raises(ValueError, match="not a task distribution"):
        Reptile.load(tmp_path / "m.zip", env=gym.make("CartPole-v1"))


def test_load_a_file_that_is_not_a_checkpoint(tmp_path):
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(ValueError, match="not a checkpoint"):
        MAML.load(garbage)
    ppo = PPO("MlpPolicy", "CartPole-v1", n_steps=8, batch_size=8)
    ppo.save(tmp_path / "ppo.zip")
    with pytest.raises(ValueError, match="not a MAML checkpoint"):
        MAML.load(tmp_path / "ppo.zip")
    reptile = Reptile("MlpPolicy", point_mass(), **small_kwargs())
    reptile.save(tmp_path / "reptile.zip")
    with pytest.raises(ValueError, match="saved by Reptile"):
        MAML.load(tmp_path / "reptile.zip")


def test_set_env(tmp_path):
    model = FOMAML("MlpPolicy", point_mass(), **small_kwargs(), **FAST_TRPO)
    model.save(tmp_path / "m.zip")
    loaded = FOMAML.load(tmp_path / "m.zip")
    loaded.set_env(point_mass(seed=4))
    assert loaded.env.num_envs == 4
    loaded.learn(1)
    assert loaded.num_timesteps == 2 * 4 * 10
    assert not params_equal(loaded.meta_parameters(), model.meta_parameters())
    with pytest.raises(ValueError):
        loaded.set_env(bandit())
    with pytest.raises(ValueError, match="not a task distribution"):
        loaded.set_env(gym.make("CartPole-v1"))


@pytest.mark.parametrize("name", ["FOMAML", "Reptile"])
def test_load_then_set_env_resumes_bit_for_bit(tmp_path, name):
    """SB3's ``load(path)`` → ``set_env(env)`` → ``learn(reset_num_timesteps=False)`` is ``load(path, env=env)``:
    the checkpoint's task sampler and VecEnv RNG states reach the env given later, not the env's own streams."""
    cls, extra = ALGOS[name]
    first = cls("MlpPolicy", point_mass(), **small_kwargs(seed=5), **extra)
    first.learn(1)
    first.save(tmp_path / "checkpoint.zip")
    with_env = cls.load(tmp_path / "checkpoint.zip", env=point_mass(seed=11))
    with_env.learn(1, reset_num_timesteps=False)
    for _ in range(2):
        later = cls.load(tmp_path / "checkpoint.zip")
        later.save(tmp_path / "resaved.zip")  # saved before it had an env: the sampler states are kept
        later = cls.load(tmp_path / "resaved.zip")
        later.set_env(point_mass(seed=11))
        later.learn(1, reset_num_timesteps=False)
        assert params_equal(later.meta_parameters(), with_env.meta_parameters())


def test_set_env_keeps_the_models_task_sampler():
    """Two models of the same seed draw the same tasks after ``set_env`` (the sampler is the model's)."""
    drawn = []
    for env_seed in (1, 2):  # the new envs' own seeds differ
        model = FOMAML("MlpPolicy", point_mass(), **small_kwargs(seed=0), **FAST_TRPO)
        model.set_env(point_mass(seed=env_seed))
        drawn.append(model.task_env.sample_tasks(3))
    assert drawn[0] == drawn[1]


@pytest.mark.parametrize("saved_with", ["batched", "dummy"])
def test_load_into_another_kind_of_vec_env(tmp_path, saved_with):
    """A checkpoint of a batched VecEnv loads into a DummyVecEnv (and the reverse): resumes with a warning."""

    def env(kind):
        return point_mass() if kind == "batched" else make_task_vec_env(point_mass(), 4, vec_env_cls="dummy")

    model = Reptile("MlpPolicy", env(saved_with), n_inner_steps=1, **small_kwargs())
    model.learn(1)
    model.save(tmp_path / "m.zip")
    other = "dummy" if saved_with == "batched" else "batched"
    with pytest.warns(UserWarning, match="not bit for bit"):
        loaded = Reptile.load(tmp_path / "m.zip", env=env(other))
    loaded.learn(1, reset_num_timesteps=False)
    assert loaded.num_timesteps == 2 * model.num_timesteps
    assert not params_equal(loaded.meta_parameters(), model.meta_parameters())
