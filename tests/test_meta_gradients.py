"""The meta-gradient maths against references: finite differences, per-task loops, double backward.

Every check runs in float64 on a tiny smooth (tanh) policy, for a Box (point mass) and a Discrete (bandit) task
distribution. References are written here with plain autograd and Python loops over tasks, independently of
the vmapped code in ``sb3_meta.common.meta_gradient``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch as th
from conftest import collect_float64, float64_policy, max_abs_diff, params_equal, point_mass, small_kwargs
from sb3_contrib.common.utils import conjugate_gradient_solver

from sb3_meta import MAML, Reptile
from sb3_meta.common.meta_gradient import MetaObjective, flatten, unflatten
from sb3_meta.common.policies import Params
from sb3_meta.common.trpo import conjugate_gradient_with_product, trpo_step

INNER_LR = 0.5


@dataclasses.dataclass
class Problem:
    policy: object
    theta: Params
    inner: list  # flattened inner batches, one per inner step
    outer: dict  # flattened outer batch (episodes of the adapted policies)
    adapted: Params  # θ_i, stacked over tasks
    path: list  # stacked parameters at each inner step
    old_log_prob: th.Tensor
    old_dist: object
    objective: MetaObjective

    @property
    def n_tasks(self) -> int:
        return self.outer["obs"].shape[0]


def build_problem(setup, n_inner_steps: int = 1, first_order: bool = False) -> Problem:
    """Sample inner batches with θ then with the adapted θ_i, and an outer batch with the final θ_i."""
    _, venv, policy, tasks, episodes = setup
    horizon = 8
    objective = MetaObjective(policy, INNER_LR, first_order=first_order)
    theta = {k: v.detach().clone() for k, v in policy.actor_parameters().items()}
    params, per_task, inner = theta, False, []
    th.manual_seed(1)
    for _ in range(n_inner_steps):
        batch = collect_float64(venv, policy, tasks, episodes, params, per_task, horizon)
        inner.append(batch.flat())
        params = objective.inner_step(params, inner[-1], shared=not per_task, create_graph=False)
        per_task = True
    outer = collect_float64(venv, policy, tasks, episodes, params, True, horizon).flat()
    adapted, path = objective.adapt(theta, inner)
    assert max_abs_diff(adapted, params) == 0.0  # adapt() replays the inner steps exactly
    old_log_prob, old_dist = objective.old_policy(adapted, outer)
    return Problem(policy, theta, inner, outer, adapted, path, old_log_prob, old_dist, objective)


@pytest.fixture(params=["point_mass", "bandit"])
def setup(request):
    return request.getfixturevalue(f"{request.param}_setup")


# --- plain-autograd references, one task at a time --------------------------------------------------------
def task_slice(batch: dict, i: int) -> dict:
    return {k: v[i] for k, v in batch.items()}


def masked_mean(x: th.Tensor, mask: th.Tensor) -> th.Tensor:
    return (x * mask).sum() / mask.sum()


def ref_inner_loss(policy, params: Params, batch: dict) -> th.Tensor:
    log_prob = policy.log_prob(policy.functional_dist_params(params, batch["obs"]), batch["actions"])
    return -masked_mean(log_prob * batch["advantages"], batch["mask"])


def ref_adapt(problem: Problem, theta: Params, i: int, create_graph: bool) -> Params:
    """θ_i(θ) for task i by explicit gradient steps."""
    params = theta
    for batch in problem.inner:
        loss = ref_inner_loss(problem.policy, params, task_slice(batch, i))
        grads = th.autograd.grad(loss, list(params.values()), create_graph=create_graph)
        params = {k: p - INNER_LR * g for (k, p), g in zip(params.items(), grads)}
    return params


def ref_surrogate(problem: Problem, params: Params, i: int) -> th.Tensor:
    batch = task_slice(problem.outer, i)
    log_prob = problem.policy.log_prob(problem.policy.functional_dist_params(params, batch["obs"]), batch["actions"])
    ratio = th.exp(log_prob - problem.old_log_prob[i])
    return masked_mean(ratio * batch["advantages"], batch["mask"])


def ref_meta_objective(problem: Problem, theta: Params) -> float:
    """mean_i surrogate_i(θ_i(θ)) with the inner steps done by plain autograd."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in theta.items()}
    total = sum(ref_surrogate(problem, ref_adapt(problem, leaves, i, False), i).item() for i in range(problem.n_tasks))
    return total / problem.n_tasks


def library_meta_gradient(problem: Problem, objective: MetaObjective) -> th.Tensor:
    """The meta-gradient as MAML's outer step computes it: J_iᵀ pulled back through the stored inner-gradient graphs."""
    outer_problem = objective.outer_problem(problem.path, problem.inner, problem.adapted, problem.outer)
    _, gradient = outer_problem.surrogate_and_gradient()
    return flatten(gradient)


def autograd_meta_gradient(problem: Problem, objective: MetaObjective) -> th.Tensor:
    """The meta-gradient by plain backpropagation through θ_i(θ) (second-order graph unless first order)."""
    leaves = {k: v.clone().requires_grad_(True) for k, v in problem.theta.items()}
    adapted = objective.adapted_for_meta_gradient(leaves, problem.inner)
    surrogate, _ = objective.outer_surrogate_and_kl(adapted, problem.outer, problem.old_log_prob, problem.old_dist)
    return flatten(dict(zip(leaves, th.autograd.grad(surrogate, list(leaves.values())))))


def central_difference_gradient(f, theta: Params, eps: float = 1e-6) -> th.Tensor:
    x = flatten(theta).detach()
    out = th.zeros_like(x)
    # one coordinate at a time: the whole gradient, not only a few directional derivatives
    for j in range(x.numel()):
        e = th.zeros_like(x)
        e[j] = eps
        out[j] = (f(unflatten(x + e, theta)) - f(unflatten(x - e, theta))) / (2 * eps)
    return out


def random_direction(problem: Problem, seed: int) -> Params:
    gen = th.Generator().manual_seed(seed)
    x = flatten(problem.theta)
    return unflatten(th.randn(x.shape, generator=gen, dtype=x.dtype), problem.theta)


def kl_hvp_double_backward(objective: MetaObjective, theta: Params, inner: list, outer: dict, old_dist) -> Callable:
    """Reference HVP: the gradient of the KL differentiated again through the inner update (third order)."""
    names = list(theta)

    def product(v: Params) -> Params:
        leaves = {k: theta[k].detach().requires_grad_(True) for k in names}
        kl = objective.kl_of_theta(leaves, inner, outer, old_dist)
        g = th.autograd.grad(kl, [leaves[k] for k in names], create_graph=True)
        gv = sum((gi * v[k]).sum() for gi, k in zip(g, names))
        hv = th.autograd.grad(gv, [leaves[k] for k in names])
        return dict(zip(names, hv))

    return product


def dot(a: Params, b: Params) -> float:
    return float(flatten(a) @ flatten(b))


# --- meta-gradients ------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_inner_steps", [1, 2])
def test_maml_gradient_matches_finite_differences(setup, n_inner_steps):
    problem = build_problem(setup, n_inner_steps=n_inner_steps)
    gradient = library_meta_gradient(problem, MetaObjective(problem.policy, INNER_LR, first_order=False))
    fd = central_difference_gradient(lambda t: ref_meta_objective(problem, t), problem.theta)
    assert gradient.norm() > 1e-3
    th.testing.assert_close(gradient, fd, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize(("n_inner_steps", "first_order"), [(1, False), (2, False), (1, True), (2, True)])
def test_outer_problem_gradient_equals_backpropagation_through_the_inner_steps(setup, n_inner_steps, first_order):
    problem = build_problem(setup, n_inner_steps=n_inner_steps)
    objective = MetaObjective(problem.policy, INNER_LR, first_order=first_order)
    outer_problem = objective.outer_problem(problem.path, problem.inner, problem.adapted, problem.outer)
    surrogate, gradient = outer_problem.surrogate_and_gradient()
    reference = autograd_meta_gradient(problem, objective)
    assert reference.norm() > 1e-3
    th.testing.assert_close(flatten(gradient), reference, rtol=1e-10, atol=1e-12)
    # π_old is the adapted policy itself: ratios are 1, the surrogate is the mean advantage
    th.testing.assert_close(outer_problem.old_log_prob, problem.old_log_prob, rtol=0, atol=0)
    expected = sum(masked_mean(problem.outer["advantages"][i], problem.outer["mask"][i]) for i in range(problem.n_tasks))
    th.testing.assert_close(surrogate, expected / problem.n_tasks, rtol=1e-12, atol=1e-14)


def test_fomaml_gradient_is_mean_gradient_at_adapted_parameters(setup):
    problem = build_problem(setup)
    gradient = library_meta_gradient(problem, MetaObjective(problem.policy, INNER_LR, first_order=True))
    per_task = []
    for i in range(problem.n_tasks):
        adapted_i = {k: v[i].clone().requires_grad_(True) for k, v in problem.adapted.items()}
        per_task.append(
            flatten(dict(zip(adapted_i, th.autograd.grad(ref_surrogate(problem, adapted_i, i), list(adapted_i.values())))))
        )
    th.testing.assert_close(gradient, th.stack(per_task).mean(dim=0), rtol=1e-10, atol=1e-12)


def test_maml_and_fomaml_differ_by_the_inner_curvature(setup):
    """g_MAML = mean_i (I − α∇²L_i(θ)) ∇S_i(θ_i): it differs from FOMAML's mean_i ∇S_i(θ_i) by −α mean_i ∇²L_i ∇S_i."""
    problem = build_problem(setup)
    maml = library_meta_gradient(problem, MetaObjective(problem.policy, INNER_LR, first_order=False))
    fomaml = library_meta_gradient(problem, MetaObjective(problem.policy, INNER_LR, first_order=True))
    correction = th.zeros_like(maml)
    for i in range(problem.n_tasks):
        adapted_i = {k: v[i].clone().requires_grad_(True) for k, v in problem.adapted.items()}
        g_i = th.autograd.grad(ref_surrogate(problem, adapted_i, i), list(adapted_i.values()))
        leaves = {k: v.clone().requires_grad_(True) for k, v in problem.theta.items()}
        inner_grad = th.autograd.grad(
            ref_inner_loss(problem.policy, leaves, task_slice(problem.inner[0], i)), list(leaves.values()), create_graph=True
        )
        hvp = th.autograd.grad(sum((a * b).sum() for a, b in zip(inner_grad, g_i)), list(leaves.values()))
        correction -= INNER_LR * flatten(dict(zip(leaves, hvp))) / problem.n_tasks
    assert (maml - fomaml).norm() > 1e-3 * maml.norm()
    th.testing.assert_close(maml - fomaml, correction, rtol=1e-8, atol=1e-12)


# --- the KL and its Hessian ------------------------------------------------------------------------------
@pytest.mark.parametrize("first_order", [False, True])
def test_kl_is_zero_at_old_parameters(setup, first_order):
    problem = build_problem(setup, first_order=first_order)
    leaves = {k: v.clone().requires_grad_(True) for k, v in problem.theta.items()}
    kl = problem.objective.kl_of_theta(leaves, problem.inner, problem.outer, problem.old_dist)
    assert abs(kl.item()) < 1e-12
    gradient = th.autograd.grad(kl, list(leaves.values()))
    assert max(float(g.abs().max()) for g in gradient) < 1e-10
    # and positive away from them
    shifted = {k: v + 0.1 * d for (k, v), d in zip(problem.theta.items(), random_direction(problem, 0).values())}
    assert float(problem.objective.kl_of_theta(shifted, problem.inner, problem.outer, problem.old_dist)) > 1e-6


@pytest.mark.parametrize(("n_inner_steps", "first_order"), [(1, False), (1, True), (2, False)])
def test_kl_hvp_exact_matches_double_backward_and_finite_differences(setup, n_inner_steps, first_order):
    problem = build_problem(setup, n_inner_steps=n_inner_steps, first_order=first_order)
    objective = problem.objective
    exact = objective.kl_hvp(problem.path, problem.inner, problem.adapted, problem.outer)
    reference = kl_hvp_double_backward(objective, problem.theta, problem.inner, problem.outer, problem.old_dist)
    finite = objective.kl_hvp_finite_difference(problem.theta, problem.inner, problem.outer, problem.old_dist)
    for seed in range(3):
        v = random_direction(problem, seed)
        hv = flatten(exact(v))
        assert hv.norm() > 1e-6
        th.testing.assert_close(hv, flatten(reference(v)), rtol=1e-9, atol=1e-12)
        if not first_order:  # see test_kl_hvp_finite_difference_first_order for FOMAML
            hv_fd = flatten(finite(v))
            assert float((hv_fd - hv).norm()) < 1e-3 * float(hv.norm())


@pytest.mark.parametrize(("sub_sampling_factor", "first_order"), [(3, False), (3, True), (2, False)])
def test_subsampled_kl_hvp_is_the_kl_hessian_of_every_kth_sample(setup, sub_sampling_factor, first_order):
    """``sub_sampling_factor`` k: H v is the KL Hessian (through the inner update) of the outer batch's every k-th
    sample of each task, while the meta-gradient and π_old stay those of the whole batch."""
    problem = build_problem(setup, first_order=first_order)
    objective = problem.objective
    full = objective.outer_problem(problem.path, problem.inner, problem.adapted, problem.outer)
    sub = objective.outer_problem(problem.path, problem.inner, problem.adapted, problem.outer, sub_sampling_factor)
    every_kth = {key: value[:, ::sub_sampling_factor] for key, value in problem.outer.items()}
    assert 0 < float(every_kth["mask"].sum()) < float(problem.outer["mask"].sum())
    _, old_dist_kth = objective.old_policy(problem.adapted, every_kth)
    reference = kl_hvp_double_backward(objective, problem.theta, problem.inner, every_kth, old_dist_kth)
    obs = problem.outer["obs"]
    one_state = bool((obs == obs[:1, :1]).all())
    for seed in range(2):
        v = random_direction(problem, seed)
        hv = flatten(sub.kl_hvp(v))
        th.testing.assert_close(hv, flatten(reference(v)), rtol=1e-9, atol=1e-12)
        if one_state:  # a bandit: every sample has the same Fisher matrix, so any subset gives the whole batch's
            th.testing.assert_close(hv, flatten(full.kl_hvp(v)), rtol=1e-9, atol=1e-12)
        else:
            assert float((hv - flatten(full.kl_hvp(v))).norm()) > 1e-3 * float(hv.norm())  # not the whole batch's
    th.testing.assert_close(
        flatten(sub.surrogate_and_gradient()[1]), flatten(full.surrogate_and_gradient()[1]), rtol=0, atol=0
    )
    th.testing.assert_close(sub.old_log_prob, full.old_log_prob, rtol=0, atol=0)


def test_kl_hvp_finite_difference_first_order(setup):
    """FOMAML's KL Hessian is F (J = I): the finite-difference HVP must approximate the same matrix as the exact one.

    Differencing ∇KL at θ + εv re-runs the inner step at θ + εv, so it measures F·J·v (J = I − α∇²L), which is
    neither FOMAML's F nor symmetric: conjugate gradient then runs on a non-symmetric operator with
    ``MAML(first_order=True, hvp="finite_difference")``.
    """
    problem = build_problem(setup, first_order=True)
    objective = problem.objective
    exact = objective.kl_hvp(problem.path, problem.inner, problem.adapted, problem.outer)
    finite = objective.kl_hvp_finite_difference(problem.theta, problem.inner, problem.outer, problem.old_dist)
    for seed in range(2):
        v = random_direction(problem, seed)
        hv, hv_fd = flatten(exact(v)), flatten(finite(v))
        assert float((hv_fd - hv).norm()) < 1e-3 * float(hv.norm())


@pytest.mark.parametrize(("n_inner_steps", "first_order"), [(1, False), (1, True), (2, False)])
def test_kl_hvp_is_symmetric_positive_semidefinite(setup, n_inner_steps, first_order):
    problem = build_problem(setup, n_inner_steps=n_inner_steps, first_order=first_order)
    hvp = problem.objective.kl_hvp(problem.path, problem.inner, problem.adapted, problem.outer)
    vectors = [random_direction(problem, seed) for seed in range(5)]
    products = [hvp(v) for v in vectors]
    for a in range(len(vectors)):
        assert dot(vectors[a], products[a]) >= -1e-12
        for b in range(a + 1, len(vectors)):
            uhv, vhu = dot(vectors[a], products[b]), dot(vectors[b], products[a])
            assert math.isclose(uhv, vhu, rel_tol=1e-9, abs_tol=1e-12)
    # The KL Hessian of a full-rank problem: the curvature along the meta-gradient is positive
    assert dot(vectors[0], products[0]) > 0


def test_old_policy_is_a_constant(point_mass_setup):
    """π_old must not carry the graph of the adapted parameters it was computed from (it is a constant in TRPO).

    MAML's ``_outer_step`` passes θ_i(θ) with its graph to ``old_policy``; an un-detached log-std makes every
    KL evaluated later depend on θ through π_old too (and ``float(kl)`` warns "requires_grad=True").
    """
    problem = build_problem(point_mass_setup)
    leaves = {k: v.clone().requires_grad_(True) for k, v in problem.theta.items()}
    adapted = problem.objective.adapted_for_meta_gradient(leaves, problem.inner)
    log_prob, dist = problem.objective.old_policy(adapted, problem.outer)
    assert not log_prob.requires_grad
    assert not dist.loc.requires_grad
    assert not dist.log_std.requires_grad


def test_dist_params_cross_torch_func_boundaries(bandit_setup):
    """A categorical policy's DistParams (no log-std) is returned from vmap and flows through jvp/vjp."""
    _, _, policy, _, _ = bandit_setup
    theta = {k: v.detach() for k, v in policy.actor_parameters().items()}
    stacked = {k: v.unsqueeze(0).expand(3, *v.shape) for k, v in theta.items()}
    obs = th.ones(3, 4, 1, dtype=th.float64)
    dist = th.func.vmap(policy.functional_dist_params)(stacked, obs)
    assert dist.log_std is None and dist.loc.shape == (3, 4, 3)
    loc, log_std = dist  # unpacks like the former NamedTuple
    assert loc is dist.loc and log_std is None
    out, vjp_fn = th.func.vjp(lambda p: th.func.vmap(policy.functional_dist_params)(p, obs), stacked)
    (cotangent,) = vjp_fn(type(out)(th.ones_like(out.loc), None))
    assert cotangent.keys() == stacked.keys()


# --- outer updates ------------------------------------------------------------------------------------
def spy_outer_step(model, log: list):
    """Record (θ before, batches, adapted θ_i, returned stats, θ after) of every outer step."""
    original = model._outer_step

    def outer_step(inner):
        before = model.meta_parameters()
        stats = original(inner)
        log.append((before, inner.batches, inner.adapted, stats, model.meta_parameters()))
        return stats

    model._outer_step = outer_step


@pytest.mark.parametrize("env_name", ["point_mass", "bandit"])
def test_reptile_update_is_epsilon_times_mean_difference(env_name):
    import conftest

    epsilon = 0.3
    model = Reptile("MlpPolicy", getattr(conftest, env_name)(), n_inner_steps=2, outer_lr=epsilon, **small_kwargs())
    log: list = []
    spy_outer_step(model, log)
    model.learn(1)
    (theta, batches, adapted, _, after) = log[0]
    assert len(batches) == 2  # one batch per inner step, none after the last one
    # θ_i recomputed from the recorded episodes, independently of the model's own inner loop
    objective = MetaObjective(model.policy, model.inner_lr, first_order=True)
    recomputed, _ = objective.adapt(theta, [b.flat() for b in batches])
    assert params_equal(recomputed, adapted)
    expected = {k: theta[k] + epsilon * (recomputed[k] - theta[k].unsqueeze(0)).mean(dim=0) for k in theta}
    assert params_equal(after, expected)
    assert not params_equal(after, theta)


def test_trpo_step_on_a_quadratic():
    """With H and g known: the full step is sqrt(2δ / gᵀH⁻¹g) H⁻¹g, accepted when the KL is within δ."""
    gen = th.Generator().manual_seed(0)
    n = 6
    a = th.randn(n, n, generator=gen, dtype=th.float64)
    hessian = a @ a.T + 0.5 * th.eye(n, dtype=th.float64)
    g = th.randn(n, generator=gen, dtype=th.float64)
    x0 = th.randn(n, generator=gen, dtype=th.float64)
    theta = {"w": x0[:4].clone(), "b": x0[4:].clone()}
    delta = 0.02

    def hvp(v: Params) -> Params:
        return unflatten(hessian @ flatten(v), theta)

    def make_evaluate(kl_scale):
        def evaluate(candidate: Params) -> tuple[float, float]:
            d = flatten(candidate) - x0
            return float(g @ d), float(kl_scale * 0.5 * d @ hessian @ d)

        return evaluate

    h_inv_g = th.linalg.solve(hessian, g)
    expected = math.sqrt(2 * delta / float(g @ h_inv_g)) * h_inv_g

    # The true KL is half the quadratic model: the full step is accepted at the first try
    new, stats = trpo_step(theta, unflatten(g, theta), hvp, make_evaluate(0.5), 0.0, delta, cg_max_steps=20, cg_damping=0.0)
    th.testing.assert_close(flatten(new) - x0, expected, rtol=1e-6, atol=1e-9)
    assert stats.accepted and stats.line_search_steps == 1
    assert stats.kl <= delta
    assert math.isclose(stats.kl, 0.5 * delta, rel_tol=1e-6)

    # The true KL is 3x the model: the line search shrinks the step by 0.8^k until the KL is within δ
    new, stats = trpo_step(theta, unflatten(g, theta), hvp, make_evaluate(3.0), 0.0, delta, cg_max_steps=20, cg_damping=0.0)
    k = math.ceil(math.log(1 / 3) / (2 * math.log(0.8)))  # smallest k with 3 * 0.8^(2k) <= 1
    assert stats.accepted and stats.line_search_steps == k + 1
    assert stats.kl <= delta
    th.testing.assert_close(flatten(new) - x0, 0.8**k * expected, rtol=1e-6, atol=1e-9)

    # Never an improvement: rejected, parameters returned unchanged
    new, stats = trpo_step(theta, unflatten(g, theta), hvp, lambda c: (-1.0, 0.0), 0.0, delta, line_search_max_iter=4)
    assert not stats.accepted and stats.line_search_steps == 4
    assert params_equal(new, theta)


@pytest.mark.parametrize("max_iter", [1, 3, 10, 30])
def test_conjugate_gradient_returns_the_product_of_its_solution(max_iter):
    """A x recovered from the products CG already made equals an explicit product (and x is sb3-contrib's)."""
    gen = th.Generator().manual_seed(max_iter)
    n = 20
    a = th.randn(n, n, generator=gen, dtype=th.float64)
    matrix = a @ a.T + 0.1 * th.eye(n, dtype=th.float64)
    b = th.randn(n, generator=gen, dtype=th.float64)
    calls = []

    def matvec(v: th.Tensor) -> th.Tensor:
        calls.append(1)
        return matrix @ v

    th.manual_seed(0)
    x, ax = conjugate_gradient_with_product(matvec, b, max_iter=max_iter)
    n_calls = len(calls)
    th.manual_seed(0)
    assert th.equal(x, conjugate_gradient_solver(lambda v: matrix @ v, b, max_iter=max_iter))
    th.testing.assert_close(ax, matrix @ x, rtol=1e-9, atol=1e-12)
    assert n_calls <= max_iter + 1  # the initial residual and one per iteration, none for A x
    if max_iter >= n:
        th.testing.assert_close(x, th.linalg.solve(matrix, b), rtol=1e-6, atol=1e-8)


def test_maml_accepted_steps_stay_within_target_kl():
    target_kl = 1e-3
    # few CG iterations: the quadratic model is rough, so the line search has to enforce the bound
    model = MAML("MlpPolicy", point_mass(), target_kl=target_kl, cg_max_steps=3, **small_kwargs(seed=2))
    log: list = []
    spy_outer_step(model, log)
    model.learn(2 * 2 * 2 * 2 * 10)  # two iterations
    assert len(log) == 2
    n_accepted = 0
    for theta, batches, _, stats, after in log:
        assert stats["train/kl"] <= target_kl
        # the KL recomputed independently between the old and the new adapted policies
        objective = MetaObjective(model.policy, model.inner_lr, first_order=False)
        inner, outer = [b.flat() for b in batches[:-1]], batches[-1].flat()
        old_adapted, _ = objective.adapt(theta, inner)
        new_adapted, _ = objective.adapt(after, inner)
        old_log_prob, old_dist = objective.old_policy(old_adapted, outer)
        _, kl = objective.outer_surrogate_and_kl(new_adapted, outer, old_log_prob, old_dist)
        assert float(kl) <= target_kl * (1 + 1e-5)
        if stats["train/step_accepted"]:
            n_accepted += 1
            assert stats["train/surrogate_improvement"] > 0
            assert math.isclose(float(kl), stats["train/kl"], rel_tol=1e-4, abs_tol=1e-9)
            assert not params_equal(after, theta)
        else:
            assert params_equal(after, theta)
    assert n_accepted >= 1


# --- the Fisher product's forward-mode half ------------------------------------------------------------------
class Cube(th.nn.Module):
    """An activation sb3_meta does not know to be element-wise: the actor falls back to ``torch.func.jvp``."""

    def forward(self, x: th.Tensor) -> th.Tensor:
        return x**3 / 3 + x


@pytest.mark.parametrize(
    "policy_kwargs",
    [
        dict(net_arch=dict(pi=[8, 6], vf=[]), activation_fn=th.nn.Tanh),
        dict(net_arch=dict(pi=[7], vf=[]), activation_fn=th.nn.ReLU),
        dict(net_arch=dict(pi=[5], vf=[]), activation_fn=th.nn.ELU),
        dict(net_arch=dict(pi=[], vf=[])),
    ],
    ids=["tanh-2-layers", "relu", "elu", "linear"],
)
def test_actor_tangent_fn_equals_torch_func_jvp(setup, policy_kwargs):
    env = setup[0]
    policy = float64_policy(env, seed=3, **policy_kwargs)
    n_tasks, n_samples = 3, 11
    gen = th.Generator().manual_seed(0)
    theta = {k: v.detach() for k, v in policy.actor_parameters().items()}
    params = {k: v.unsqueeze(0) + 0.1 * th.randn(n_tasks, *v.shape, generator=gen, dtype=v.dtype) for k, v in theta.items()}
    obs = th.stack(
        [th.as_tensor(np.stack([env.observation_space.sample() for _ in range(n_samples)])) for _ in range(n_tasks)]
    )
    obs = obs.double() if obs.is_floating_point() else obs
    tangent_fn = policy.actor_tangent_fn(params, obs)
    assert tangent_fn is not None
    u = {k: th.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in params.items()}
    expected = th.func.jvp(lambda p: th.func.vmap(policy.functional_dist_params)(p, obs), (params,), (u,))[1]
    got = tangent_fn(u)
    # the caller's own forward pass (OuterProblem passes it) gives the same map
    reference = th.func.vmap(policy.functional_dist_params)(params, obs)
    with_reference = policy.actor_tangent_fn(params, obs, reference=reference)
    assert with_reference is not None
    th.testing.assert_close(with_reference(u).loc, got.loc, rtol=0, atol=0)
    th.testing.assert_close(got.loc, expected.loc, rtol=1e-12, atol=1e-12)
    if expected.log_std is None:
        assert got.log_std is None
    else:
        th.testing.assert_close(got.log_std, expected.log_std, rtol=0, atol=0)


def test_actor_tangent_fn_declines_unknown_activations_and_the_hvp_stays_exact(point_mass_setup):
    env, venv, _, tasks, episodes = point_mass_setup
    policy = float64_policy(env, activation_fn=Cube)
    theta = {k: v.detach() for k, v in policy.actor_parameters().items()}
    stacked = {k: v.unsqueeze(0).expand(2, *v.shape) for k, v in theta.items()}
    assert policy.actor_tangent_fn(stacked, th.zeros(2, 4, 2, dtype=th.float64)) is None
    problem = build_problem((env, venv, policy, tasks, episodes))
    exact = problem.objective.kl_hvp(problem.path, problem.inner, problem.adapted, problem.outer)
    reference = kl_hvp_double_backward(problem.objective, problem.theta, problem.inner, problem.outer, problem.old_dist)
    v = random_direction(problem, 0)
    th.testing.assert_close(flatten(exact(v)), flatten(reference(v)), rtol=1e-9, atol=1e-12)
