"""The linear feature baseline, discounted returns, GAE and per-task normalisation against hand-written loops."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch as th
from conftest import point_mass

from sb3_meta.common.rollout import (
    LinearFeatureBaseline,
    TaskBatch,
    collect_task_batch,
    discounted_returns,
    gae_advantages,
    normalize_per_task,
)
from sb3_meta.envs import make_task_vec_env

GAMMA = 0.9


def make_mask(lengths: list[list[int]], t_max: int) -> th.Tensor:
    """(K, T, E) mask of episodes of the given lengths (lengths[k][e])."""
    k, e = len(lengths), len(lengths[0])
    mask = th.zeros(k, t_max, e, dtype=th.float64)
    for i in range(k):
        for j in range(e):
            mask[i, : lengths[i][j], j] = 1.0
    return mask


LENGTHS = [[5, 3, 1], [2, 5, 4]]  # early terminations of different lengths in each task
T_MAX = 5
# Fits use long episodes: with t/100 features of short ones the ridge term (1e-5) dominates the t², t³ columns
LONG_LENGTHS = [[100, 60, 30], [80, 100, 45]]
T_LONG = 100


def hand_features(obs: th.Tensor) -> th.Tensor:
    k, t_max, e = obs.shape[:3]
    out = th.zeros(k, t_max, e, 2 * obs[0, 0, 0].numel() + 4, dtype=th.float64)
    for i in range(k):
        for t in range(t_max):
            for j in range(e):
                o = [min(max(float(x), -10.0), 10.0) for x in obs[i, t, j].reshape(-1)]
                s = t / 100.0
                out[i, t, j] = th.tensor([*o, *(x * x for x in o), s, s**2, s**3, 1.0], dtype=th.float64)
    return out


def test_features_match_the_spec():
    gen = th.Generator().manual_seed(0)
    obs = 8.0 * th.randn(2, T_MAX, 3, 2, generator=gen)  # some entries beyond ±10 (clipped)
    assert (obs.abs() > 10).any()
    th.testing.assert_close(LinearFeatureBaseline.features(obs), hand_features(obs), rtol=1e-12, atol=1e-12)


def test_feature_time_restarts_with_every_episode():
    """In a sampled batch, index t along dim 1 is the step within the episode: t = 0 is every episode's first state."""
    env = point_mass(seed=0)
    tasks = env.sample_tasks(2)
    venv = make_task_vec_env(env, 2 * 3, seed=0)
    from conftest import TINY_POLICY_KWARGS

    from sb3_meta.common.policies import MetaActorCriticPolicy

    policy = MetaActorCriticPolicy(env.observation_space, env.action_space, lambda _: 1e-3, **TINY_POLICY_KWARGS)
    params = {k: v.detach() for k, v in policy.actor_parameters().items()}
    for _ in range(2):  # a second pass restarts every episode too
        batch = collect_task_batch(venv, policy, tasks, 3, params, False, 10)
        assert batch is not None
        for k, task in enumerate(tasks):
            th.testing.assert_close(batch.obs[k, 0], th.tensor([task.start] * 3, dtype=th.float32))
        time_column = LinearFeatureBaseline.features(batch.obs)[..., 4]  # after o (2) and o² (2)
        expected = (th.arange(batch.obs.shape[1], dtype=th.float64) / 100).view(1, -1, 1).expand_as(time_column)
        th.testing.assert_close(time_column, expected)


def linear_problem(seed: int):
    """(obs, mask, target) with target = features @ w_k, a different w_k for each task."""
    gen = th.Generator().manual_seed(seed)
    obs = 3.0 * th.randn(2, T_LONG, 3, 2, generator=gen, dtype=th.float64)
    mask = make_mask(LONG_LENGTHS, T_LONG)
    weights = th.randn(2, 8, generator=gen, dtype=th.float64)
    return obs, mask, th.einsum("ktef,kf->kte", hand_features(obs), weights)


@pytest.mark.parametrize(("reg_coeff", "tol"), [(1e-5, 1e-4), (1e-10, 1e-8)])
def test_fit_recovers_an_exactly_linear_target_per_task(reg_coeff, tol):
    obs, mask, target = linear_problem(1)
    # garbage past the end of each episode must not matter
    returns = th.where(mask.bool(), target, th.full_like(target, 1e6))
    obs_garbage = th.where(mask.bool().unsqueeze(-1), obs, th.full_like(obs, -7.0))
    values = LinearFeatureBaseline(reg_coeff=reg_coeff).fit_predict(obs_garbage, mask, returns)
    valid = mask.bool()
    assert float(target.abs().max()) > 10
    th.testing.assert_close(values[valid], target[valid], rtol=0, atol=tol)
    assert th.all(values[~valid] == 0)


def test_fit_of_one_broken_task_does_not_spoil_the_others():
    """A non-finite solve for one task (NaN returns) leaves the other tasks' fits exact and its own values finite."""
    obs, mask, target = linear_problem(2)
    returns = target.clone()
    returns[0, 0, 0] = float("nan")
    values = LinearFeatureBaseline().fit_predict(obs, mask, returns)
    valid = mask[1].bool()
    th.testing.assert_close(values[1][valid], target[1][valid], rtol=0, atol=1e-4)
    assert th.isfinite(values[0]).all()


def hand_returns(rewards: th.Tensor, lengths: list[list[int]], gamma: float) -> th.Tensor:
    out = th.zeros_like(rewards)
    for i, row in enumerate(lengths):
        for j, length in enumerate(row):
            running = 0.0
            for t in reversed(range(length)):
                running = float(rewards[i, t, j]) + gamma * running
                out[i, t, j] = running
    return out


def hand_gae(rewards, values, lengths, gamma, lam) -> th.Tensor:
    out = th.zeros_like(rewards)
    for i, row in enumerate(lengths):
        for j, length in enumerate(row):
            adv, next_value = 0.0, 0.0  # the value after the episode's last step is 0
            for t in reversed(range(length)):
                delta = float(rewards[i, t, j]) + gamma * next_value - float(values[i, t, j])
                adv = delta + gamma * lam * adv
                out[i, t, j] = adv
                next_value = float(values[i, t, j])
    return out


@pytest.fixture
def episodes():
    gen = th.Generator().manual_seed(3)
    mask = make_mask(LENGTHS, T_MAX)
    rewards = th.randn(2, T_MAX, 3, generator=gen, dtype=th.float64)
    rewards_with_garbage = th.where(mask.bool(), rewards, th.full_like(rewards, 100.0))  # after the end: ignored
    values = th.randn(2, T_MAX, 3, generator=gen, dtype=th.float64) * mask
    return rewards_with_garbage, values, mask


def test_discounted_returns_with_early_termination(episodes):
    rewards, _, mask = episodes
    th.testing.assert_close(discounted_returns(rewards, mask, GAMMA), hand_returns(rewards, LENGTHS, GAMMA))


@pytest.mark.parametrize("lam", [1.0, 0.95, 0.0])
def test_gae_with_early_termination(episodes, lam):
    rewards, values, mask = episodes
    adv = gae_advantages(rewards, values, mask, GAMMA, lam)
    th.testing.assert_close(adv, hand_gae(rewards, values, LENGTHS, GAMMA, lam))
    if lam == 1.0:  # GAE(λ=1) is the discounted return minus the baseline
        th.testing.assert_close(adv, (hand_returns(rewards, LENGTHS, GAMMA) - values) * mask)


def test_per_task_normalisation(episodes):
    rewards, _, mask = episodes
    x = rewards * mask
    x[1] = 50.0 * x[1] + 3.0
    out = normalize_per_task(x, mask)
    for k in range(2):
        valid = x[k][mask[k].bool()]
        expected = (valid - valid.mean()) / (valid.std(unbiased=False) + 1e-8)
        th.testing.assert_close(out[k][mask[k].bool()], expected)
        assert th.all(out[k][~mask[k].bool()] == 0)
    # each task is normalised on its own: rescaling task 1 does not change task 0
    y = x.clone()
    y[1] = y[1] * 1000.0
    th.testing.assert_close(normalize_per_task(y, mask)[0], out[0])


def test_compute_advantages_is_zero_when_the_baseline_is_exact():
    """Rewards whose discounted returns are linear in the features: the fitted baseline explains them fully."""
    obs, mask, returns = linear_problem(4)
    returns = returns * mask
    gen = th.Generator().manual_seed(4)
    next_returns = th.cat([returns[:, 1:], th.zeros_like(returns[:, :1])], dim=1)
    rewards = (returns - GAMMA * next_returns) * mask
    batch = TaskBatch(obs=obs, actions=th.zeros(2, T_LONG, 3, 2), rewards=rewards, mask=mask, tasks=[None, None])
    th.testing.assert_close(discounted_returns(rewards, mask, GAMMA), returns)
    adv = batch.compute_advantages(GAMMA, 1.0, normalize=False)
    assert float(adv.abs().max()) < 1e-4 < float(returns.abs().max())
    # with normalisation the valid advantages of each task have mean 0 and unit variance (when not degenerate)
    rewards_noisy = rewards + 0.1 * th.randn(rewards.shape, generator=gen, dtype=th.float64) * mask
    batch = TaskBatch(obs=obs, actions=th.zeros(2, T_LONG, 3, 2), rewards=rewards_noisy, mask=mask, tasks=[None, None])
    adv = batch.compute_advantages(GAMMA, 1.0, normalize=True)
    for k in range(2):
        valid = adv[k][mask[k].bool()]
        assert abs(float(valid.mean())) < 1e-9
        assert abs(float(valid.std(unbiased=False)) - 1.0) < 1e-6
    assert np.all(adv.numpy()[~mask.bool().numpy()] == 0)


def test_flat_keeps_every_valid_transition_and_drops_the_padding_no_task_needs():
    lengths = [[3, 1, 2], [2, 2, 1]]  # valid: 6 and 5 of T*E = 12 per task
    mask = make_mask(lengths, 4)
    g = th.Generator().manual_seed(0)
    batch = TaskBatch(
        obs=th.randn(2, 4, 3, 2, generator=g, dtype=th.float64),
        actions=th.randn(2, 4, 3, 1, generator=g, dtype=th.float64),
        rewards=th.randn(2, 4, 3, generator=g, dtype=th.float64),
        mask=mask,
        tasks=[0, 1],
    )
    batch.compute_advantages(GAMMA, 1.0)
    flat = batch.flat()
    assert flat["mask"].shape == (2, 6)  # the most valid transitions any task has
    assert flat["mask"].tolist() == [[1.0] * 6, [1.0] * 5 + [0.0]]  # valid first
    for k in range(2):
        valid = mask[k].reshape(-1).bool()
        # the same transitions in the same (time, episode) order
        assert th.equal(flat["obs"][k, : int(valid.sum())], batch.obs[k].reshape(12, 2)[valid])
        assert th.equal(flat["actions"][k, : int(valid.sum())], batch.actions[k].reshape(12, 1)[valid])
        assert th.equal(flat["advantages"][k, : int(valid.sum())], batch.advantages[k].reshape(12)[valid])
    full = make_mask([[4, 4, 4], [4, 4, 4]], 4)  # no padding: the layout is (time, episode), unchanged
    whole = TaskBatch(obs=batch.obs, actions=batch.actions, rewards=batch.rewards, mask=full, tasks=[0, 1])
    whole.compute_advantages(GAMMA, 1.0)
    assert th.equal(whole.flat()["obs"], batch.obs.reshape(2, 12, 2))


def test_fit_works_after_torch_set_num_threads_with_ant_sized_features():
    """``torch.set_num_threads(2)`` (a common line in training scripts) breaks MKL's batched LU for systems of ~150+
    unknowns (pytorch/pytorch#142815); the baseline's 214-feature ridge systems on Ant must still be solved, and
    equal a per-task float64 ridge solve by numpy. In a fresh process: the breakage is process-wide state."""
    script = textwrap.dedent(
        """
        import numpy as np, torch as th
        from sb3_meta.common.rollout import LinearFeatureBaseline
        th.set_num_threads(2)
        gen = th.Generator().manual_seed(0)
        k, t, e, d = 3, 50, 4, 105  # Ant's observation: 105 values, so 2 * 105 + 4 features
        obs = th.randn(k, t, e, d, generator=gen, dtype=th.float64)
        mask = th.ones(k, t, e, dtype=th.float64)
        returns = th.randn(k, t, e, generator=gen, dtype=th.float64)
        values = LinearFeatureBaseline().fit_predict(obs, mask, returns)
        feats = LinearFeatureBaseline.features(obs).numpy().reshape(k, -1, 2 * d + 4)
        for i in range(k):
            phi, y = feats[i], returns[i].numpy().reshape(-1)
            w = np.linalg.solve(phi.T @ phi + 1e-5 * np.eye(phi.shape[1]), phi.T @ y)
            np.testing.assert_allclose(values[i].numpy().reshape(-1), phi @ w, rtol=1e-6, atol=1e-6)
        print("fitted", th.get_num_threads())
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "fitted 2" in out.stdout
