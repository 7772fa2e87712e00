"""Few-shot evaluation (evaluate_adaptation, AdaptationResult), MetaEvalCallback, the baselines and the example scripts."""

from __future__ import annotations

import copy
import csv
import importlib.util
import os
import pathlib
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from conftest import HORIZON, bandit, params_equal, point_mass, small_kwargs
from stable_baselines3 import A2C, PPO, SAC
from stable_baselines3.common.logger import configure

from sb3_meta import FOMAML, AdaptationResult, MetaEvalCallback, Reptile, evaluate_adaptation
from sb3_meta.common.baselines import make_mixture_vec_env, make_random, train_oracle, train_pretrained
from sb3_meta.common.callbacks import StopTrainingOnIterations
from sb3_meta.common.evaluation import OracleVecEnv, as_meta_model, sample_eval_tasks
from sb3_meta.common.rng import get_rng_state
from sb3_meta.envs import OracleObservation, PointMassTask, make_oracle_env, make_task_vec_env

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


# --- evaluate_adaptation -----------------------------------------------------------------------------------------
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


# --- SB3 models ----------------------------------------------------------------------------------------------------
def assert_same_distributions(sb3_model, meta_policy, observations: np.ndarray) -> None:
    obs_t, _ = sb3_model.policy.obs_to_tensor(observations)
    with th.no_grad():
        dist = sb3_model.policy.get_distribution(obs_t).distribution
        mine = meta_policy.actor_dist_params(obs_t)
    if mine.log_std is None:
        assert th.equal(dist.probs, th.softmax(mine.loc, dim=-1)) or th.allclose(dist.probs, th.softmax(mine.loc, -1))
        assert th.allclose(dist.logits, th.log_softmax(mine.loc, dim=-1), atol=1e-6)
    else:
        assert th.equal(dist.mean, mine.loc)
        assert th.equal(dist.stddev, th.exp(mine.log_std).expand_as(dist.stddev))


def test_ppo_transfer_gives_identical_distributions():
    env = point_mass(start="origin")
    ppo = PPO("MlpPolicy", env, seed=0, policy_kwargs=SB3_TINY, n_steps=16, batch_size=16)
    with th.no_grad():
        ppo.policy.log_std.fill_(-0.3)  # not the default, so that a lost log-std would show
    before = global_rng_states()
    meta = as_meta_model(ppo, max_episode_steps=HORIZON)
    assert_same_global_rngs(before)
    observations = np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32)
    assert_same_distributions(ppo, meta.policy, observations)
    result = evaluate_adaptation(ppo, env, n_tasks=2, n_steps=1, n_episodes=2, seed=0)
    assert result.returns.shape == (2, 2) and result.adapt_lr == pytest.approx(0.1)


def test_a2c_categorical_transfer_gives_identical_distributions():
    env = bandit()
    a2c = A2C("MlpPolicy", env, seed=0, policy_kwargs=dict(net_arch=[8]))
    meta = as_meta_model(a2c, max_episode_steps=5)
    assert_same_distributions(a2c, meta.policy, np.linspace(0, 1, 6, dtype=np.float32)[:, None])
    result = evaluate_adaptation(a2c, env, n_tasks=2, n_steps=2, n_episodes=3, seed=0, adapt_lr=0.5)
    assert result.returns.shape == (2, 3) and result.adapt_lr == 0.5


def test_vpg_step_from_ppo_equals_the_meta_models():
    """A PPO policy and a FOMAML holding the same parameters take the same VPG step on the same episodes."""
    env = point_mass(start="origin")
    ppo = PPO("MlpPolicy", env, seed=1, policy_kwargs=SB3_TINY, n_steps=16, batch_size=16)
    same_architecture = dict(SB3_TINY, activation_fn=th.nn.Tanh)  # SB3's default activation; the meta-policy's is ReLU
    meta = FOMAML("MlpPolicy", point_mass(start="origin"), **small_kwargs(policy_kwargs=same_architecture, **FAST_TRPO))
    meta.policy.load_state_dict(ppo.policy.state_dict())
    tasks = sample_eval_tasks(env, 3, seed=0)
    from_ppo, returns_ppo = as_meta_model(ppo, max_episode_steps=HORIZON).adapt_tasks(
        tasks, n_steps=2, n_episodes=2, env=env, seed=0
    )
    from_meta, returns_meta = meta.adapt_tasks(tasks, n_steps=2, n_episodes=2, env=env, seed=0)
    assert params_equal(from_ppo, from_meta)
    assert not params_equal(from_meta, {k: v.unsqueeze(0).expand_as(from_meta[k]) for k, v in meta.meta_parameters().items()})
    np.testing.assert_array_equal(returns_ppo, returns_meta)
    a = evaluate_adaptation(ppo, env, tasks=tasks, n_steps=2, n_episodes=2, seed=0)
    b = evaluate_adaptation(meta, env, tasks=tasks, n_steps=2, n_episodes=2, seed=0)
    np.testing.assert_array_equal(a.returns, b.returns)


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


# --- AdaptationResult ---------------------------------------------------------------------------------------------
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


# --- MetaEvalCallback -----------------------------------------------------------------------------------------------
def train(callback=None, iterations: int = 3) -> FOMAML:
    model = fomaml()
    model.learn(iterations * 2 * 4 * HORIZON, callback=callback)
    return model


def test_meta_eval_callback_logs_saves_and_leaves_training_identical(tmp_path):
    reference = train()
    callback = MetaEvalCallback(
        point_mass(start="origin"),
        eval_freq=1,
        n_tasks=3,
        n_steps=2,
        n_episodes=2,
        best_model_save_path=str(tmp_path / "best"),
        log_path=str(tmp_path / "logs"),
        verbose=0,
    )
    model = fomaml()
    model.set_logger(configure(str(tmp_path / "progress"), ["csv"]))
    model.learn(3 * 2 * 4 * HORIZON, callback=callback)
    # training is bit for bit the same as without the callback
    assert model.num_timesteps == reference.num_timesteps
    assert params_equal(dict(model.policy.named_parameters()), dict(reference.policy.named_parameters()))
    mine, theirs = get_rng_state(model.task_env, model.env), get_rng_state(reference.task_env, reference.env)
    assert th.equal(mine["torch"], theirs["torch"]) and mine["task_sampler"] == theirs["task_sampler"]
    assert mine["vec_env"]["sub_envs"] == theirs["vec_env"]["sub_envs"]
    # one evaluation after each iteration (the last at training end), on the same held-out tasks
    assert callback.evaluations_iterations == [1, 2, 3]
    assert callback.evaluations_timesteps == [80, 160, 240]
    assert len(callback.tasks) == 3 and callback.last_result.tasks == callback.tasks
    with open(tmp_path / "progress" / "progress.csv") as f:
        header = next(csv.reader(f))
    assert {"meta_eval/return_step_0", "meta_eval/return_step_1", "meta_eval/return_step_2"} <= set(header)
    best = np.max([r.mean(axis=0)[-1] for r in callback.evaluations_results])
    assert callback.best_mean_return == pytest.approx(best)
    loaded = FOMAML.load(tmp_path / "best" / "best_model.zip")  # without env: evaluation takes the env it is given
    best = int(np.argmax([r.mean(axis=0)[-1] for r in callback.evaluations_results]))
    again = evaluate_adaptation(loaded, point_mass(start="origin"), tasks=callback.tasks, n_steps=2, n_episodes=2, seed=0)
    np.testing.assert_array_equal(again.returns, callback.evaluations_results[best])
    logs = np.load(tmp_path / "logs" / "evaluations.npz")
    assert logs["results"].shape == (3, 3, 3) and list(logs["timesteps"]) == [80, 160, 240]
    # the final evaluation equals a direct one on the same tasks and seed
    direct = evaluate_adaptation(model, point_mass(start="origin"), tasks=callback.tasks, n_steps=2, n_episodes=2, seed=0)
    np.testing.assert_array_equal(direct.returns, callback.evaluations_results[-1])


def test_meta_eval_callback_frequency_and_bad_env():
    callback = MetaEvalCallback(point_mass(start="origin"), eval_freq=2, n_tasks=2, n_steps=1, n_episodes=1, verbose=0)
    train(callback, iterations=3)
    assert callback.evaluations_iterations == [2]
    with pytest.raises(ValueError, match="observation space"):
        fomaml().learn(8, callback=MetaEvalCallback(bandit(), eval_freq=1, n_tasks=1, verbose=0))
    with pytest.raises(ValueError, match="eval_freq"):
        MetaEvalCallback(point_mass(), eval_freq=0)


def test_meta_eval_callback_with_ppo_leaves_training_identical():
    def ppo() -> PPO:
        return PPO(
            "MlpPolicy", point_mass(start="origin"), seed=0, policy_kwargs=SB3_TINY, n_steps=16, batch_size=8, n_epochs=2
        )

    reference = ppo().learn(48)
    callback = MetaEvalCallback(point_mass(start="origin"), eval_freq=1, n_tasks=2, n_steps=1, n_episodes=2, verbose=0)
    model = ppo().learn(48, callback=callback)
    assert callback.evaluations_iterations == [1, 2, 3] and callback.n_episodes == 2
    assert params_equal(dict(model.policy.named_parameters()), dict(reference.policy.named_parameters()))


def test_stop_training_on_iterations():
    stop = StopTrainingOnIterations(2)
    model = fomaml()
    model.learn(10**9, callback=stop)
    assert len(model.iteration_times) == 2 and stop.timesteps_at_stop == 2 * 2 * 4 * HORIZON


# --- baselines --------------------------------------------------------------------------------------------------
def test_mixture_vec_env_draws_a_task_per_episode():
    venv = make_mixture_vec_env(point_mass(), 2, seed=0)
    venv.reset()
    seen = set()
    for _ in range(3 * HORIZON):
        seen.update(venv.get_tasks())
        venv.step(np.zeros((2, 2)))
    assert len(seen) >= 6  # 2 sub-envs x 3 episodes, each with a fresh task
    oracle = make_mixture_vec_env(point_mass(), 2, seed=0, oracle=True)
    assert oracle.observation_space == make_oracle_env(point_mass()).observation_space


@pytest.mark.parametrize("algo", ["ppo", "trpo"])
def test_baselines_train_and_evaluate(algo):
    env = point_mass(start="origin")
    kwargs = dict(algo=algo, seed=0, n_envs=4, policy_kwargs=SB3_TINY)
    pretrained = train_pretrained(env, 80, **kwargs)
    assert pretrained.num_timesteps == 80 and pretrained.n_envs == 4
    oracle = train_oracle(env, 40, **kwargs)
    assert oracle.observation_space == make_oracle_env(env).observation_space
    random_policy = make_random(env, seed=0, algo=algo, policy_kwargs=SB3_TINY)
    assert random_policy.num_timesteps == 0
    for model, eval_env, steps in ((pretrained, env, 1), (random_policy, env, 1), (oracle, make_oracle_env(env), 0)):
        assert evaluate_adaptation(model, eval_env, n_tasks=2, n_steps=steps, n_episodes=2, seed=0).returns.shape == (
            2,
            steps + 1,
        )


# --- example scripts ------------------------------------------------------------------------------------------------
TINY = [
    "--seeds", "0", "--iterations", "1", "--meta-batch-size", "2", "--fast-batch-size", "2", "--max-episode-steps", "5",
    "--hidden-size", "8", "--n-test-tasks", "3", "--test-episodes", "2", "--test-steps", "2",
]  # fmt: skip


def test_reproduce_pointmass_skip_and_report(tmp_path, capsys):
    reproduce = load_example("reproduce")
    out = str(tmp_path / "results")
    reproduce.main(["pointmass", "--out", out, *TINY])
    runs = tmp_path / "results" / "runs" / "pointmass-origin"
    for method in reproduce.METHODS:
        for ext in ("csv", "zip", "json"):
            assert (runs / f"{method}_seed0.{ext}").exists(), (method, ext)
    maml = AdaptationResult.from_csv(runs / "maml_seed0.csv")
    oracle = AdaptationResult.from_csv(runs / "oracle_seed0.csv")
    assert maml.returns.shape == (3, 3) and oracle.returns.shape == (3, 1)
    assert maml.tasks == oracle.tasks  # the same held-out tasks for every method
    mtimes = {p: p.stat().st_mtime_ns for p in runs.iterdir()}
    capsys.readouterr()
    reproduce.main(["pointmass", "--out", out, *TINY, "--methods", "maml", "oracle"])
    printed = capsys.readouterr().out
    assert printed.count("] skip:") == 2
    assert mtimes == {p: p.stat().st_mtime_ns for p in runs.iterdir()}
    reproduce.main(["ablation", "--out", out, *TINY, "--fast-batch-sizes", "2", "3", "--meta-batch-sizes", "2"])
    reproduce.main(["timing", "--out", out, *TINY, "--env", "pointmass-origin", "--iterations", "2"])
    # re-evaluation of the saved runs with one step size per step: the first step is the same as the runs' own
    reproduce.main(
        ["schedule", "--out", out, "--seeds", "0", "--methods", "maml", "pretrained", "--step-sizes", "0.1", "0.02"]
    )
    rerun = tmp_path / "results" / "runs" / "pointmass-origin@0.1-0.02"
    assert sorted(p.name for p in rerun.glob("*.csv")) == ["maml_seed0.csv", "pretrained_seed0.csv"]
    again = AdaptationResult.from_csv(rerun / "maml_seed0.csv")
    assert again.adapt_lr == [0.1, 0.02] and again.tasks == maml.tasks
    np.testing.assert_array_equal(again.returns[:, :2], maml.returns[:, :2])
    assert not np.array_equal(again.returns[:, 2], maml.returns[:, 2])
    with pytest.raises(SystemExit, match="2 values expected"):
        reproduce.main(["schedule", "--out", out, "--seeds", "0", "--methods", "fomaml", "--step-sizes", "0.1"])
    reference = tmp_path / "reference.csv"
    reference.write_text(
        "env,method,grad_steps,n_tasks,mean_return,std_across_tasks,stderr\nPointMass2D,maml,0,40,-40.0,12.0,2.0\n"
    )
    reproduce.main(["report", "--out", out, "--reference", str(reference)])
    results = tmp_path / "results"
    for name in ("summary.csv", "summary.md", "pointmass-origin.png", "timing.png", "ablation.png"):
        assert (results / name).exists() and (results / name).stat().st_size > 0, name
    with open(results / "summary.csv") as f:
        summary = list(csv.DictReader(f))
    row = next(r for r in summary if r["method"] == "maml" and r["grad_steps"] == "0" and r["experiment"] == "pointmass")
    assert float(row["mean_return"]) == pytest.approx(maml.mean[0]) and float(row["paper_mean_return"]) == -40.0
    markdown = (results / "summary.md").read_text()
    assert "FOMAML vs MAML" in markdown and ("as well as" in markdown or "than MAML" in markdown)
    assert "MAML paper: maml" in markdown and "Ablation" in markdown and "Meta-iteration time" in markdown
    assert "PointMass (start at the origin), step sizes 0.1, 0.02" in markdown
    assert (results / "pointmass-origin_lr0.1-0.02.png").exists()


def test_report_statistics():
    reproduce = load_example("reproduce")
    a = {"mean_return": 1.0, "stderr": 0.5}
    assert reproduce.compare(a, {"mean_return": 0.0, "stderr": 0.0})["verdict"] == "as well as"  # 1.0 <= 2 * 0.5
    assert reproduce.compare(a, {"mean_return": -1.0, "stderr": 0.0})["verdict"] == "better than"
    assert reproduce.compare({"mean_return": -2.0, "stderr": 0.1}, a)["verdict"] == "worse than"
    assert reproduce.stats([1.0, 2.0, 3.0]) == pytest.approx(
        {"n": 3, "mean_return": 2.0, "std": 1.0, "stderr": 1 / np.sqrt(3)}
    )


def test_train_script(tmp_path):
    train_script = load_example("train")
    save = tmp_path / "model.zip"
    model, result = train_script.main(
        [
            "--algo", "reptile", "--env", "pointmass-origin", "--timesteps", "1", "--save", str(save),
            "--hyperparams", "meta_batch_size=2", "fast_batch_size=2", "n_inner_steps=2", "max_episode_steps=5",
            "policy_kwargs=dict(net_arch=dict(pi=[8], vf=[]))",
            "--eval-tasks", "2", "--eval-steps", "1", "--eval-episodes", "2", "--eval-freq", "1", "--checkpoint-freq", "8",
            "--no-progress-bar", "--verbose", "0",
        ]
    )  # fmt: skip
    assert isinstance(model, Reptile) and model.meta_batch_size == 2 and model.n_inner_steps == 2
    assert save.exists() and (tmp_path / "best_model.zip").exists() and (tmp_path / "evaluations.npz").exists()
    assert any((tmp_path / "checkpoints").iterdir())
    assert AdaptationResult.from_csv(tmp_path / "model_adaptation.csv").returns.shape == (2, 2) == result.returns.shape
    defaults = train_script.load_hyperparams("maml", "antvel")
    assert defaults["meta_batch_size"] == 40 and defaults["policy_kwargs"] == dict(net_arch=dict(pi=[100, 100], vf=[]))
    assert train_script.load_hyperparams("fomaml", "sb3_meta/PointMass-v0")["meta_batch_size"] == 20  # default entry
    with pytest.raises(ValueError, match="key=value"):
        train_script.parse_overrides(["meta_batch_size"])
    assert os.path.basename(train_script.HYPERPARAMS_DIR) == "hyperparams"


def test_inspect_episodes_prints_lengths_returns_and_log_std(tmp_path, capsys):
    inspect = load_example("inspect_episodes")
    model = fomaml()
    model.save(tmp_path / "model.zip")
    inspect.main([str(tmp_path / "model.zip"), "--algo", "fomaml", "--env", "pointmass-origin", "--episodes", "2"])
    out = capsys.readouterr().out
    assert "lengths [100, 100]" in out  # seeded: neither episode reaches its goal, so both run to the time limit
    assert f"{model._n_iterations} training updates, {model.num_timesteps:,} steps" in out
    log_std = float(model.policy.log_std.mean())
    assert f"mean log-std {log_std:.3f}" in out
    returns = [float(x) for x in out.split("returns [")[1].split("]")[0].split(",")]
    assert len(returns) == 2 and all(r < 0 for r in returns)  # negative distances to the goal
