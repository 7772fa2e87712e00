"""Few-shot evaluation: evaluate_adaptation and AdaptationResult."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from conftest import (
    FAST_TRPO,
    HORIZON,
    SB3_TINY,
    assert_same_global_rngs,
    bandit,
    fomaml,
    global_rng_states,
    params_equal,
    point_mass,
    small_kwargs,
)
from stable_baselines3 import PPO, SAC

from sb3_meta import FOMAML, AdaptationResult, Reptile, evaluate_adaptation
from sb3_meta.common.evaluation import OracleVecEnv, sample_eval_tasks
from sb3_meta.envs import OracleObservation, PointMassTask, make_oracle_env, make_task_vec_env


def test_shapes_mean_and_stderr_from_returns():
    model = fomaml()
    result = evaluate_adaptation(model, point_mass(start="origin"), n_tasks=3, n_steps=2, n_episodes=2, seed=0)
    assert result.returns.shape == (3, 3) and result.n_tasks == 3 and result.n_steps == 2
    assert len(result.tasks) == 3 and all(isinstance(t, PointMassTask) for t in result.tasks)
    np.testing.assert_allclose(result.mean, result.returns.mean(axis=0))
    by_hand = np.array([np.std(result.returns[:, k], ddof=1) / np.sqrt(3) for k in range(3)])
    np.testing.assert_allclose(result.stderr, by_hand)
    assert np.all(result.returns < 0)  # point mass: minus distances
    assert result.n_episodes == 2 and result.adapt_lr == model.inner_lr and not result.deterministic
    assert "grad steps" in str(result)


def test_returns_are_those_of_adapt_tasks():
    """The per-task returns are MetaAlgorithm.adapt_tasks' for the same tasks and seed (no second inner loop)."""
    model = fomaml()
    env = point_mass(start="origin")
    tasks = sample_eval_tasks(env, 3, seed=5)
    result = evaluate_adaptation(model, env, tasks=tasks, n_steps=2, n_episodes=2, seed=1)
    _, returns = model.adapt_tasks(tasks, n_steps=2, n_episodes=2, env=env, seed=1)
    np.testing.assert_array_equal(result.returns, returns)


def test_same_seed_same_result_and_nothing_moves():
    model = fomaml()
    env = point_mass(start="origin")
    theta = model.meta_parameters()
    env_task_rng = copy.deepcopy(env.task_rng.bit_generator.state)
    before = global_rng_states()
    a = evaluate_adaptation(model, env, n_tasks=3, n_steps=1, n_episodes=2, seed=3)
    b = evaluate_adaptation(model, env, n_tasks=3, n_steps=1, n_episodes=2, seed=3)
    c = evaluate_adaptation(model, env, n_tasks=3, n_steps=1, n_episodes=2, seed=4)
    np.testing.assert_array_equal(a.returns, b.returns)
    assert a.tasks == b.tasks and a.tasks != c.tasks
    assert not np.array_equal(a.returns, c.returns)
    assert_same_global_rngs(before)
    assert env.task_rng.bit_generator.state == env_task_rng
    assert params_equal(theta, model.meta_parameters())


def test_unseeded_calls_draw_new_tasks_with_the_envs_task_rng():
    """As documented: without seed or tasks, the env's own task RNG draws (and advances), so calls differ."""
    model = fomaml()
    env = point_mass(start="origin")
    expected = copy.deepcopy(env).sample_tasks(3)
    a = evaluate_adaptation(model, env, n_tasks=3, n_steps=0, n_episodes=2)
    b = evaluate_adaptation(model, env, n_tasks=3, n_steps=0, n_episodes=2)
    assert a.tasks == expected and b.tasks != a.tasks
    state = copy.deepcopy(env.task_rng.bit_generator.state)
    given = evaluate_adaptation(model, env, n_steps=0, n_episodes=2, tasks=a.tasks)  # given tasks: nothing drawn
    assert given.tasks == a.tasks and env.task_rng.bit_generator.state == state


def test_held_out_tasks_differ_from_the_first_training_tasks():
    env = point_mass(start="origin", seed=0)
    assert sample_eval_tasks(env, 3, seed=0) != point_mass(start="origin", seed=0).sample_tasks(3)
    assert sample_eval_tasks(env, 3, seed=0) == sample_eval_tasks(point_mass(start="origin"), 3, seed=0)


def test_zero_steps():
    result = evaluate_adaptation(fomaml(), point_mass(start="origin"), n_tasks=2, n_steps=0, n_episodes=2, seed=0)
    assert result.returns.shape == (2, 1) and result.mean.shape == (1,)


def test_deterministic_measures_the_mean_action():
    """With the mean action, a point mass that starts at the origin runs the same episode every time: the return of
    one task equals a hand-rolled episode of the single env; the adaptation itself is unchanged."""
    model = fomaml()
    env = point_mass(start="origin")
    tasks = sample_eval_tasks(env, 2, seed=0)
    result = evaluate_adaptation(model, env, tasks=tasks, n_steps=1, n_episodes=2, seed=0, deterministic=True)
    assert result.deterministic and result.returns.shape == (2, 2)
    single = point_mass(start="origin")
    for i, task in enumerate(tasks):
        obs, _ = single.reset(options={"task": task})
        total = 0.0
        for _ in range(HORIZON):
            with th.no_grad():
                action = model.policy.actor_dist_params(th.as_tensor(obs[None], device=model.device)).loc[0].cpu().numpy()
            obs, reward, terminated, truncated, _ = single.step(np.clip(action, -1, 1))
            total += reward
            if terminated or truncated:
                break
        assert result.returns[i, 0] == pytest.approx(total, rel=1e-5)
    again = evaluate_adaptation(model, env, tasks=tasks, n_steps=1, n_episodes=2, seed=0, deterministic=True)
    np.testing.assert_array_equal(result.returns, again.returns)
    stochastic = evaluate_adaptation(model, env, tasks=tasks, n_steps=1, n_episodes=2, seed=0)
    assert not np.array_equal(result.returns, stochastic.returns)


def test_reptile_and_discrete_meta_learner():
    reptile = Reptile("MlpPolicy", point_mass(), **small_kwargs(n_inner_steps=2))
    assert evaluate_adaptation(reptile, point_mass(), n_tasks=2, n_steps=2, n_episodes=2, seed=0).returns.shape == (2, 3)
    discrete = FOMAML("MlpPolicy", bandit(), **small_kwargs(**FAST_TRPO))
    result = evaluate_adaptation(discrete, bandit(), n_tasks=2, n_steps=1, n_episodes=3, seed=0)
    assert result.returns.shape == (2, 2) and np.all((result.returns >= 0) & (result.returns <= 5))


def test_oracle_vec_env_matches_oracle_observation():
    env = point_mass(start="random", seed=0)
    tasks = env.sample_tasks(3)
    venv = OracleVecEnv(make_task_vec_env(env, 3))
    single = OracleObservation(point_mass(start="random"))
    assert venv.observation_space == single.observation_space
    venv.set_tasks(tasks)
    obs = venv.reset()
    actions = np.random.default_rng(0).uniform(-1, 1, size=(HORIZON, 3, 2))
    for i, task in enumerate(tasks):
        single_obs, _ = single.reset(options={"task": task})
        np.testing.assert_array_equal(obs[i], single_obs)
    for t in range(HORIZON):
        obs, _, dones, infos = venv.step(actions[t])
        assert obs.shape == (3, 2 + 4)
    assert dones.all()
    for i, task in enumerate(tasks):
        single.reset(options={"task": task})
        for t in range(HORIZON):
            single_obs, *_ = single.step(actions[t, i])
        np.testing.assert_array_equal(infos[i]["terminal_observation"], single_obs)


def test_oracle_model_evaluates_through_the_oracle_env():
    env = point_mass(start="origin")
    ppo = PPO(
        "MlpPolicy", make_oracle_env(point_mass(start="origin")), seed=0, policy_kwargs=SB3_TINY, n_steps=16, batch_size=16
    )
    result = evaluate_adaptation(ppo, make_oracle_env(env), n_tasks=2, n_steps=0, n_episodes=2, seed=0)
    assert result.returns.shape == (2, 1)
    with pytest.raises(ValueError, match="observation space"):
        evaluate_adaptation(ppo, env, n_tasks=2, n_steps=0, n_episodes=2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_steps=-1), "n_steps"),
        (dict(n_steps=1.5), "n_steps"),
        (dict(n_tasks=0), "n_tasks"),
        (dict(n_episodes=0), "n_episodes"),
        (dict(adapt_lr=0.0), "adapt_lr"),
        (dict(adapt_lr=True), "adapt_lr"),
        (dict(adapt_lr=[0.1, float("nan"), 0.1]), "adapt_lr"),
        (dict(seed=-1), "seed"),
        (dict(tasks=[]), "tasks"),
        (dict(tasks=["not a task"]), "PointMassTask"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        evaluate_adaptation(fomaml(), point_mass(), **kwargs)


def test_bad_envs_and_models():
    model = fomaml()
    with pytest.raises(ValueError, match="not a task distribution"):
        evaluate_adaptation(model, gym.make("Pendulum-v1"))
    with pytest.raises(ValueError, match="VecEnv"):
        evaluate_adaptation(model, make_task_vec_env(point_mass(), 2))
    with pytest.raises(ValueError, match="observation space"):
        evaluate_adaptation(model, bandit())
    sac = SAC("MlpPolicy", point_mass(), learning_starts=0, buffer_size=10)
    with pytest.raises(ValueError, match="ActorCriticPolicy"):
        evaluate_adaptation(sac, point_mass())
    gsde = PPO("MlpPolicy", point_mass(), use_sde=True, n_steps=16, batch_size=16)
    with pytest.raises(ValueError, match="gSDE"):
        evaluate_adaptation(gsde, point_mass())
    with pytest.raises(ValueError, match="SB3 model"):
        evaluate_adaptation(model.policy, point_mass())


def test_result_rows_and_csv_round_trip(tmp_path):
    result = evaluate_adaptation(fomaml(), point_mass(), n_tasks=3, n_steps=2, n_episodes=2, seed=0)
    rows = result.to_rows(method="fomaml", seed=0)
    assert len(rows) == 3 * 3 and list(rows[0])[:2] == ["method", "seed"]
    assert {r["grad_steps"] for r in rows} == {0, 1, 2}
    path = tmp_path / "result.csv"
    result.to_csv(path, method="fomaml")
    back = AdaptationResult.from_csv(path)
    np.testing.assert_array_equal(back.returns, result.returns)
    assert back.tasks == result.tasks and back.n_episodes == 2 and back.adapt_lr == result.adapt_lr
    assert not back.deterministic
    summary = result.summary_rows(method="fomaml")
    assert [s["grad_steps"] for s in summary] == [0, 1, 2]
    assert summary[1]["mean_return"] == pytest.approx(result.mean[1]) and summary[1]["stderr"] == pytest.approx(
        result.stderr[1]
    )
    # one step size per step round-trips too
    schedule = evaluate_adaptation(fomaml(), point_mass(), n_tasks=2, n_steps=2, n_episodes=2, seed=0, adapt_lr=[0.1, 0.05])
    assert schedule.adapt_lr == [0.1, 0.05]
    np.testing.assert_array_equal(
        schedule.returns[:, :2],
        evaluate_adaptation(fomaml(), point_mass(), n_tasks=2, n_steps=1, n_episodes=2, seed=0, adapt_lr=0.1).returns,
    )  # the first step is the same
    schedule.to_csv(tmp_path / "schedule.csv")
    assert AdaptationResult.from_csv(tmp_path / "schedule.csv").adapt_lr == [0.1, 0.05]
    with pytest.raises(ValueError, match="one positive number per adaptation step"):
        evaluate_adaptation(fomaml(), point_mass(), n_tasks=2, n_steps=3, adapt_lr=[0.1, 0.05])
    with pytest.raises(ValueError, match="two rows"):
        AdaptationResult.from_rows(rows + rows)
    pd = pytest.importorskip("pandas")
    frame = result.to_dataframe(method="fomaml")
    assert isinstance(frame, pd.DataFrame) and len(frame) == 9
    assert frame.groupby("grad_steps")["return"].mean().to_numpy() == pytest.approx(result.mean)


def test_result_validation():
    with pytest.raises(ValueError, match="shape"):
        AdaptationResult(returns=np.zeros(3), tasks=[])
    with pytest.raises(ValueError, match="tasks"):
        AdaptationResult(returns=np.zeros((2, 1)), tasks=[PointMassTask()])
    single = AdaptationResult(returns=np.ones((1, 2)), tasks=[PointMassTask()])
    assert np.isnan(single.stderr).all()
