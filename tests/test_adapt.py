"""``adapt``: a new model holding θ adapted to one task; the meta-model, its env and the global RNGs are untouched."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch as th
from conftest import bandit, params_equal, point_mass, small_kwargs

from sb3_meta import FOMAML, MAML, Reptile
from sb3_meta.envs import PointMassTask, make_adaptation_vec_env

FAST_TRPO = dict(cg_max_steps=3, line_search_max_iter=5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A FOMAML model after one meta-iteration, and its checkpoint."""
    model = FOMAML("MlpPolicy", point_mass(), **small_kwargs(seed=3), **FAST_TRPO)
    model.learn(1)
    path = tmp_path_factory.mktemp("adapt") / "model.zip"
    model.save(path)
    return model, path


def global_rng_states():
    return th.get_rng_state().clone(), np.random.get_state()[1].copy(), random.getstate()


def assert_same_rng_states(a, b):
    assert th.equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2]


def test_adapt_to_a_task(trained, tmp_path):
    model, _ = trained
    theta = model.meta_parameters()
    task = point_mass(seed=11).sample_tasks(1)[0]
    adapted = model.adapt(task, steps=3, seed=0)
    assert type(adapted) is FOMAML and adapted is not model
    assert params_equal(model.meta_parameters(), theta)  # the meta-model is unchanged
    assert not params_equal(adapted.meta_parameters(), theta)
    assert adapted.adaptation_returns.shape == (4,)  # before each of the 3 steps and after the last
    assert np.all(np.isfinite(adapted.adaptation_returns))
    assert adapted.task_env.get_task() == task
    obs = np.zeros((2, 2), dtype=np.float32)
    assert not np.array_equal(adapted.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    adapted.save(tmp_path / "adapted.zip")
    reloaded = FOMAML.load(tmp_path / "adapted.zip")
    assert params_equal(reloaded.meta_parameters(), adapted.meta_parameters())


def test_adapt_to_an_env_set_to_a_task(trained):
    model, _ = trained
    env = point_mass(seed=5)
    task = env.sample_tasks(1)[0]
    env.reset_task(task)
    adapted = model.adapt(env, n_steps=1, seed=0)
    assert type(adapted) is FOMAML
    assert adapted.adaptation_returns.shape == (2,)
    # the same as adapting to the task itself
    assert params_equal(adapted.meta_parameters(), model.adapt(task, n_steps=1, seed=0).meta_parameters())
    assert env.get_task() == task  # the given env is not switched to anything else


def test_adapt_a_freshly_loaded_model(trained):
    model, path = trained
    loaded = FOMAML.load(path)  # no env, no task distribution
    env = point_mass(seed=5)
    env.reset_task(env.sample_tasks(1)[0])
    adapted = loaded.adapt(env, n_steps=2, seed=4)
    assert params_equal(adapted.meta_parameters(), model.adapt(env, n_steps=2, seed=4).meta_parameters())
    assert not params_equal(adapted.meta_parameters(), loaded.meta_parameters())
    with pytest.raises(ValueError, match="no task distribution"):
        loaded.adapt(env.get_task())


def test_adapt_is_reproducible_and_leaves_global_rngs_alone(trained):
    model, _ = trained
    task = point_mass(seed=11).sample_tasks(1)[0]
    th.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    before = global_rng_states()
    first = model.adapt(task, steps=2, seed=1)
    assert_same_rng_states(global_rng_states(), before)
    second = model.adapt(task, steps=2, seed=1)
    assert params_equal(first.meta_parameters(), second.meta_parameters())
    other = model.adapt(task, steps=2, seed=2)
    assert not params_equal(first.meta_parameters(), other.meta_parameters())
    unseeded = model.adapt(task, steps=1)  # without a seed the global RNGs are not moved either
    assert np.all(np.isfinite(unseeded.adaptation_returns))
    assert_same_rng_states(global_rng_states(), before)


@pytest.mark.parametrize("cls", [FOMAML, MAML, Reptile])
def test_adapt_does_not_disturb_training(cls):
    """learn, adapt, learn gives the same meta-parameters as learn, learn: adapt draws on none of training's RNGs."""
    extra = dict(n_inner_steps=1) if cls is Reptile else FAST_TRPO
    straight = cls("MlpPolicy", point_mass(), **small_kwargs(seed=2), **extra)
    straight.learn(1)
    straight.learn(1, reset_num_timesteps=False)
    model = cls("MlpPolicy", point_mass(), **small_kwargs(seed=2), **extra)
    model.learn(1)
    theta = model.meta_parameters()
    adapted = model.adapt(PointMassTask((0.2, 0.1), (0.0, 0.0)), steps=1)
    assert type(adapted) is cls
    model.learn(1, reset_num_timesteps=False)
    assert not params_equal(model.meta_parameters(), theta)
    assert params_equal(model.meta_parameters(), straight.meta_parameters())


@pytest.mark.parametrize("cls", [FOMAML, MAML, Reptile])
def test_unshared_features_extractor_trains_and_adapts_as_the_shared_one(cls):
    """``share_features_extractor=False`` (an SB3 policy option) gives the actor its own extractor: the meta-policy
    must use the actor's features alone. With SB3's parameter-free flatten extractor the actor is the same function
    either way, so the same seed gives the same meta-parameters and adapted parameters, bit for bit."""
    extra = dict(n_inner_steps=1) if cls is Reptile else FAST_TRPO
    models = []
    for share in (True, False):
        kwargs = small_kwargs(seed=4)
        kwargs["policy_kwargs"] = {**kwargs["policy_kwargs"], "share_features_extractor": share}
        model = cls("MlpPolicy", point_mass(), **kwargs, **extra)
        model.learn(1)
        models.append((model, model.adapt(PointMassTask((0.2, 0.1), (0.0, 0.0)), steps=1, seed=0)))
    (shared, shared_adapted), (own, own_adapted) = models
    assert own.policy.vf_features_extractor is not own.policy.pi_features_extractor
    assert params_equal(own.meta_parameters(), shared.meta_parameters())
    assert params_equal(own_adapted.meta_parameters(), shared_adapted.meta_parameters())
    assert not params_equal(own_adapted.meta_parameters(), own.meta_parameters())
    obs = np.zeros((3, 2), dtype=np.float32)
    np.testing.assert_array_equal(own.predict(obs, deterministic=True)[0], shared.predict(obs, deterministic=True)[0])


def test_zero_steps_returns_the_meta_parameters(trained):
    model, _ = trained
    adapted = model.adapt(PointMassTask((0.3, 0.3), (0.0, 0.0)), n_steps=0, seed=0)
    assert params_equal(adapted.meta_parameters(), model.meta_parameters())
    assert adapted.adaptation_returns.shape == (1,)


def test_discrete_adapt():
    model = Reptile("MlpPolicy", bandit(), n_inner_steps=1, **small_kwargs(seed=1))
    task = bandit(seed=9).sample_tasks(1)[0]
    adapted = model.adapt(task, steps=2, seed=0)
    assert type(adapted) is Reptile
    assert not params_equal(adapted.meta_parameters(), model.meta_parameters())
    assert adapted.predict(np.ones((3, 1), dtype=np.float32))[0].shape == (3,)


def test_bad_input(trained):
    model, _ = trained
    task = PointMassTask((0.3, 0.3), (0.0, 0.0))
    with pytest.raises(ValueError, match="n_steps"):
        model.adapt(task, n_steps=-1)
    with pytest.raises(ValueError, match="n_steps"):
        model.adapt(task, steps=-2)
    with pytest.raises(ValueError, match="not both"):
        model.adapt(task, n_steps=1, steps=2)
    with pytest.raises(ValueError, match="adapt needs a task"):
        model.adapt()
    with pytest.raises(ValueError, match="expected a PointMassTask, got BanditTask"):
        model.adapt(bandit().sample_tasks(1)[0])
    bandit_env = bandit()
    bandit_env.reset_task(bandit_env.sample_tasks(1)[0])
    with pytest.raises(ValueError):  # an env of another distribution (other spaces)
        model.adapt(bandit_env)
    with pytest.raises(ValueError, match="adapt_lr"):
        model.adapt(task, adapt_lr=0.0)
    with pytest.raises(ValueError, match="adapt_lr"):
        model.adapt(task, adapt_lr=True)  # not silently 1.0
    for wrong in ({"goal": (0.3, 0.3)}, np.array([0.3, 0.3]), "sb3_meta/PointMass-v0"):  # not a task nor an env
        with pytest.raises(ValueError, match=r"adapt expects a task \(a PointMassTask from sample_tasks\(\)\)"):
            model.adapt(wrong)


def test_adapt_keeps_wrappers_and_rejects_task_mixtures():
    from sb3_meta.envs import OracleObservation, TaskMixture

    model = FOMAML("MlpPolicy", OracleObservation(point_mass()), **small_kwargs(seed=0), **FAST_TRPO)
    model.learn(1)
    env = OracleObservation(point_mass(seed=5))
    tasks = env.unwrapped.sample_tasks(2)
    _, returns = model.adapt_tasks(tasks, n_steps=1, n_episodes=2, env=env, seed=0)
    assert returns.shape == (2, 2) and np.all(np.isfinite(returns))
    with pytest.raises(ValueError, match="task mixture"):
        model.adapt_tasks(tasks, n_steps=1, env=TaskMixture(OracleObservation(point_mass())))
    with pytest.raises(ValueError, match="task mixture"):
        FOMAML("MlpPolicy", point_mass(sample_task_on_reset=True), **small_kwargs(seed=0))


def test_one_step_size_per_adaptation_step(trained):
    """adapt_lr=[a, b]: step 1 moves by a, step 2 by b (checked on the very episodes each step used)."""
    model, _ = trained
    tasks = point_mass(seed=11).sample_tasks(2)
    # the same number for every step is the scalar, bit for bit
    same = model.adapt_tasks(tasks, n_steps=2, n_episodes=2, seed=0, adapt_lr=[0.3, 0.3])
    scalar = model.adapt_tasks(tasks, n_steps=2, n_episodes=2, seed=0, adapt_lr=0.3)
    assert params_equal(same[0], scalar[0])
    np.testing.assert_array_equal(same[1], scalar[1])

    venv = make_adaptation_vec_env(model.task_env, len(tasks) * 2)
    theta = model.meta_parameters()
    inner = model.inner_loop(venv).adapt(theta, venv, tasks, 2, 2, seed=0, step_sizes=[0.3, 0.05])
    batches, adapted = inner.batches, inner.adapted
    objective = model.objective
    first = objective.inner_step(theta, batches[0].flat(), shared=True, create_graph=False, step_size=0.3)
    assert params_equal(inner.path[1], first)  # the second batch was sampled with θ − 0.3 ∇L
    second = objective.inner_step(first, batches[1].flat(), shared=False, create_graph=False, step_size=0.05)
    assert params_equal(adapted, second)
    scaled = objective.inner_step(first, batches[1].flat(), shared=False, create_graph=False, step_size=0.3)
    assert not params_equal(adapted, scaled)

    theta_before = model.meta_parameters()
    with pytest.raises(ValueError, match="one positive number per adaptation step"):
        model.adapt_tasks(tasks, n_steps=3, adapt_lr=[0.1, 0.05])
    with pytest.raises(ValueError, match="adapt_lr"):
        model.adapt(tasks[0], steps=2, adapt_lr=[0.1, -0.05])
    assert params_equal(model.meta_parameters(), theta_before)
    adapted_model = model.adapt(tasks[0], steps=2, adapt_lr=(0.2, 0.1), seed=0)
    assert adapted_model.adaptation_returns.shape == (3,)


# --- the same rules at every entry point that adapts -----------------------------------------------------------
def test_every_entry_point_that_adapts_refuses_a_task_mixture_with_the_same_error(trained):
    """A task mixture draws a new task at every reset: adaptation numbers measured on it would mean nothing."""
    from sb3_meta import MetaEvalCallback, evaluate_adaptation
    from sb3_meta.envs import TaskMixture

    model, _ = trained
    task = point_mass(seed=3).sample_tasks(1)[0]
    message = "draws a new task at every reset"
    for mixture in (TaskMixture(point_mass()), point_mass(sample_task_on_reset=True)):
        with pytest.raises(ValueError, match=message):
            model.adapt_tasks([task], env=mixture)
        with pytest.raises(ValueError, match=message):
            model.adapt(mixture)
        with pytest.raises(ValueError, match=message):
            evaluate_adaptation(model, mixture, n_tasks=2, n_steps=1, n_episodes=2)
        callback = MetaEvalCallback(mixture, eval_freq=1, n_tasks=2, n_episodes=2, verbose=0)
        with pytest.raises(ValueError, match=message):
            model.learn(1, callback=callback)


def test_dump_logs_is_sb3s_public_method(tmp_path):
    """SB3 >= 2.6 calls ``model.dump_logs()`` (e.g. from its callbacks); it writes the last iteration's values."""
    import csv

    from stable_baselines3.common.logger import configure

    from sb3_meta.common.base_class import MetaAlgorithm

    assert "_dump_logs" not in MetaAlgorithm.__dict__  # SB3's deprecated alias forwards to dump_logs
    model = FOMAML("MlpPolicy", point_mass(), **small_kwargs())
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(1, log_interval=None)  # nothing dumped by learn itself
    model.dump_logs()
    with open(tmp_path / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["time/iterations"] == "1" and float(rows[0]["rollout/pre_adapt_return"]) < 0


def test_iteration_times_are_bounded():
    from sb3_meta.common.base_class import ITERATION_TIMES_KEPT

    model = FOMAML("MlpPolicy", point_mass(), **small_kwargs())
    model.iteration_times.extend([{}] * (ITERATION_TIMES_KEPT + 5))
    assert len(model.iteration_times) == ITERATION_TIMES_KEPT
