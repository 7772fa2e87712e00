"""The SB3 baselines (pretrained, random, oracle), the task-mixture VecEnv, SB3 models adapted with the meta step."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from conftest import (
    FAST_TRPO,
    HORIZON,
    SB3_TINY,
    assert_same_global_rngs,
    bandit,
    global_rng_states,
    params_equal,
    point_mass,
    small_kwargs,
)
from stable_baselines3 import A2C, PPO

from sb3_meta import FOMAML, evaluate_adaptation
from sb3_meta.common.baselines import as_meta_model, make_mixture_vec_env, make_random, train_oracle, train_pretrained
from sb3_meta.common.evaluation import sample_eval_tasks
from sb3_meta.envs import make_oracle_env


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
