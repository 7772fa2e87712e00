"""The inner loop's variants (original Reptile): Adam with β1 = 0 as the inner optimiser, inner steps on reused episodes.

Adam is checked against its update written out by hand with per-task autograd; reuse against the steps replayed
on the first pass alone, and by the env steps that training samples.
"""

from __future__ import annotations

import pytest
import torch as th
from conftest import HORIZON, collect_float64, max_abs_diff, params_equal, point_mass, small_kwargs

from sb3_meta import FOMAML, MAML, Reptile
from sb3_meta.common.meta_gradient import MetaObjective, stack_params
from sb3_meta.envs import make_adaptation_vec_env

LR, BETA2, EPS = 0.01, 0.999, 1e-8


def test_adam_inner_steps_against_hand_computation(point_mass_setup):
    _, venv, policy, tasks, episodes = point_mass_setup
    objective = MetaObjective(policy, LR, first_order=True, inner_optimizer="adam", adam_beta2=BETA2, adam_eps=EPS)
    theta = {k: v.detach().clone() for k, v in policy.actor_parameters().items()}
    th.manual_seed(0)
    batch = collect_float64(venv, policy, tasks, episodes, theta, False, 8).flat()
    adapted, path = objective.adapt(theta, [batch, batch, batch])  # three steps on the same episodes

    for i in range(len(tasks)):  # Adam (β1 = 0) by hand, one task at a time
        task_batch = {k: v[i] for k, v in batch.items()}
        params = {k: v.clone() for k, v in theta.items()}
        second_moment = {k: th.zeros_like(v) for k, v in theta.items()}
        for step in range(1, 4):
            assert max_abs_diff({k: path[step - 1][k][i] for k in params}, params) < 1e-12
            leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
            grads = dict(zip(leaves, th.autograd.grad(objective.inner_loss(leaves, task_batch), list(leaves.values()))))
            for k in params:
                second_moment[k] = BETA2 * second_moment[k] + (1 - BETA2) * grads[k] ** 2
                v_hat = second_moment[k] / (1 - BETA2**step)
                params[k] = params[k] - LR * grads[k] / (v_hat.sqrt() + EPS)
        assert max_abs_diff({k: adapted[k][i] for k in params}, params) < 1e-12

    # Adam's first step is about LR per parameter (g / |g|), whatever the gradient's scale: not the VPG step
    sgd = MetaObjective(policy, LR, first_order=True).inner_step(theta, batch, shared=True, create_graph=False)
    first = objective.inner_step(theta, batch, shared=True, create_graph=False)
    moved = th.cat([(first[k] - theta[k]).abs().flatten() for k in theta])
    assert float(moved.max()) == pytest.approx(LR, rel=1e-6) and not params_equal(first, sgd)


def test_adam_needs_a_first_order_meta_gradient(point_mass_setup):
    policy = point_mass_setup[2]
    with pytest.raises(ValueError, match="first-order meta-gradient"):
        MetaObjective(policy, LR, first_order=False, inner_optimizer="adam")
    with pytest.raises(ValueError, match="inner_optimizer must be one of"):
        MetaObjective(policy, LR, first_order=True, inner_optimizer="rmsprop")
    with pytest.raises(ValueError, match="inner_optimizer must be one of"):
        Reptile("MlpPolicy", point_mass(), inner_optimizer="Adam", **small_kwargs())
    model = MAML("MlpPolicy", point_mass(), **small_kwargs())
    model.inner_optimizer = "adam"  # second order: refused when the objective is built, before any sampling
    with pytest.raises(ValueError, match="first-order"):
        model.learn(1)
    assert model.num_timesteps == 0
    fomaml = FOMAML("MlpPolicy", point_mass(), **small_kwargs())
    fomaml.inner_optimizer = "adam"  # the same mechanism serves FOMAML
    assert fomaml.make_objective().inner_optimizer == "adam"


def test_reused_episodes_one_pass_per_iteration():
    k, e = 2, 2
    sizes = small_kwargs(meta_batch_size=k, fast_batch_size=e)
    fresh = Reptile("MlpPolicy", point_mass(), n_inner_steps=3, **sizes)
    reused = Reptile("MlpPolicy", point_mass(), n_inner_steps=3, reuse_inner_episodes=True, **sizes)
    fresh.learn(1)
    reused.learn(1)
    assert fresh.num_timesteps == 3 * k * e * HORIZON  # every step samples its own episodes
    assert reused.num_timesteps == k * e * HORIZON  # one pass; the three steps reuse it
    assert not params_equal(reused.meta_parameters(), fresh.meta_parameters())


def replay_on_first_pass(objective, theta, flat, n_steps):
    """The inner steps on the first pass alone, written out: VPG, then the importance-weighted loss."""
    reused = {**flat, "behaviour_log_prob": objective.old_policy(stack_params(theta, flat["obs"].shape[0]), flat)[0]}
    params = objective.inner_step(theta, flat, shared=True, create_graph=False)
    for _ in range(n_steps - 1):
        params = objective.inner_step(params, reused, shared=False, create_graph=False, reused=True)
    return params


def test_reused_loss_gradient_is_the_vpg_gradient_at_the_behaviour_policy(point_mass_setup):
    _, venv, policy, tasks, episodes = point_mass_setup
    objective = MetaObjective(policy, 0.5, first_order=True)
    theta = {k: v.detach().clone() for k, v in policy.actor_parameters().items()}
    th.manual_seed(0)
    flat = collect_float64(venv, policy, tasks, episodes, theta, False, 8).flat()
    stacked = stack_params(theta, len(tasks))
    reused = {**flat, "behaviour_log_prob": objective.old_policy(stacked, flat)[0]}
    vpg = objective.inner_step(theta, flat, shared=True, create_graph=False)
    weighted = objective.inner_step(stacked, reused, shared=False, create_graph=False, reused=True)
    assert max_abs_diff(vpg, weighted) < 1e-12
    # away from the behaviour policy the two losses differ (the ratio weights the samples)
    moved = objective.inner_step(vpg, reused, shared=False, create_graph=False, reused=True)
    plain = objective.inner_step(vpg, flat, shared=False, create_graph=False)
    assert max_abs_diff(moved, plain) > 1e-6
    # unclipped (reuse_clip_range=None): the same gradient at the behaviour policy, another one past the clip
    unclipped = MetaObjective(policy, 0.5, first_order=True, reuse_clip_range=None)
    assert max_abs_diff(unclipped.inner_step(stacked, reused, shared=False, create_graph=False, reused=True), vpg) < 1e-12
    ratio = th.exp(unclipped.old_policy(vpg, flat)[0] - reused["behaviour_log_prob"])[flat["mask"] > 0]
    assert float((ratio - 1).abs().max()) > 0.2  # some samples are past the clip range, so the two losses differ
    assert max_abs_diff(unclipped.inner_step(vpg, reused, shared=False, create_graph=False, reused=True), moved) > 1e-6


def test_reused_episodes_steps_on_the_first_pass_only():
    model = Reptile("MlpPolicy", point_mass(), n_inner_steps=3, reuse_inner_episodes=True, **small_kwargs(seed=2))
    tasks = point_mass(seed=7).sample_tasks(2)
    venv = make_adaptation_vec_env(model.task_env, 2 * 3)
    loop, theta = model.inner_loop(venv), model.meta_parameters()
    objective = model.objective

    # training: one pass, every step computed on it
    result = loop.run(theta, venv, tasks, 3, 3, sample_last=False)
    assert result is not None and len(result.batches) == 1 and not result.has_outer_batch
    assert all(b is result.batches[0] for b in result.inner_batches)
    assert params_equal(result.adapted, replay_on_first_pass(objective, theta, result.batches[0].flat(), 3))

    # adaptation: a pass after every step measures the return there, but the steps still use the first pass only
    adapted = loop.adapt(theta, venv, tasks, 3, 3, seed=0)
    assert len(adapted.batches) == 4 and adapted.has_outer_batch
    assert params_equal(adapted.adapted, replay_on_first_pass(objective, theta, adapted.batches[0].flat(), 3))
    assert params_equal(adapted.path[2], replay_on_first_pass(objective, theta, adapted.batches[0].flat(), 2))
    _, returns = model.adapt_tasks(tasks, n_steps=3, n_episodes=3, seed=0)
    assert returns.shape == (2, 4)
    # the same adaptation with fresh episodes per step ends elsewhere
    fresh = Reptile("MlpPolicy", point_mass(), n_inner_steps=3, **small_kwargs(seed=2))
    fresh_result = fresh.inner_loop(venv).adapt(theta, venv, tasks, 3, 3, seed=0)
    assert params_equal(fresh_result.path[1], adapted.path[1])  # the same first step
    assert not params_equal(fresh_result.adapted, adapted.adapted)


def test_reuse_is_refused_where_the_meta_gradient_replays_the_inner_steps():
    model = FOMAML("MlpPolicy", point_mass(), **small_kwargs())
    model.reuse_inner_episodes = True
    with pytest.raises(ValueError, match="Reptile option"):
        model.learn(1)
    assert model.num_timesteps == 0
