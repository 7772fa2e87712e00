"""With a vanishing inner step, the MAML/FOMAML outer update is sb3-contrib's TRPO on the task mixture.

With ``inner_lr = 1e-8`` the adapted policies are θ_i = θ − 1e-8 ∇L_i(θ) ≈ θ, so the meta-learner's outer step
(``MAML._outer_step``: surrogate gradient, KL-Hessian products, ``trpo_step``) is a TRPO step from θ on the
post-adaptation episodes D' of all tasks. The test feeds the *same batch* (D' as the meta-learner sampled it,
and its advantages) into ``sb3_contrib.TRPO.train`` with the same actor weights, KL bound, CG iterations, damping
and line search, and compares the two actor updates.

What differs between the two implementations, and how each difference is removed here:

1. Advantages. The meta-learner fits a linear feature baseline per task, uses GAE(γ, λ) and normalises per task
   (population std over the task's valid steps, + 1e-8); sb3-contrib normalises over the whole batch with
   ``torch.std`` (unbiased). Removed: the meta-learner's own normalised advantages go into the rollout buffer and
   ``normalize_advantage=False``.
2. Sample weights. The meta-learner's surrogate and KL are means over tasks of per-task means over valid steps;
   sb3-contrib's are means over all samples. Equal when every task has as many valid steps: here every episode
   lasts T steps (point mass with ``goal_radius=0``), which is asserted.
3. KL scale. sb3-contrib's KL is ``kl_divergence(new, old).mean()``; for a diagonal Gaussian that tensor holds one
   KL per *action dimension*, so sb3-contrib's KL (and its Fisher matrix) is the summed KL divided by the action
   dimension d. The meta-learner sums over action dimensions (as rllab / the MAML code). With the same nominal
   ``target_kl`` sb3-contrib's trust region is d times larger in summed KL (steps √d longer: d = 2 here, 6 on
   HalfCheetah, 8 on Ant). Removed: sb3-contrib gets ``target_kl = δ/d`` and ``cg_damping = λ/d``; its CG system is
   then the meta-learner's divided by d, which has the same solution direction and the same trust-region step.
4. KL direction. The meta-learner bounds KL(π_old ‖ π_new), sb3-contrib KL(π_new ‖ π_old). Both have the Fisher
   matrix as Hessian at θ_old, so direction and step length agree; their values along the line search differ at
   third order in the step (measured ~0.4 % at the accepted step). Where δ falls between the two, the line
   searches accept different candidates (a factor 0.8 apart); with these seeds they accept the same one (asserted).
5. Acceptance rule: meta ``kl <= δ``, sb3-contrib ``kl < δ``; both require the surrogate to rise above its value at
   θ_old, mean(Â) (0 for normalised advantages) in both.
6. Step length: both sqrt(2δ / xᵀ(H + λI)x) with the damped product (the meta-learner recovers (H + λI)x from the
   CG's products by least squares; it agrees with an explicit product to 1e-13).
7. Conjugate gradient: both call ``sb3_contrib.common.utils.conjugate_gradient_solver``, which starts from
   x0 = 1e-4·N(0, I). The test seeds torch identically before both, but since sb3-contrib's system is the
   meta-learner's divided by d, the same draw is a start d times closer to 0 in the meta-learner's scale: the
   Krylov spaces differ slightly. That, not the implementations, is the residual in float64 (checked: with the
   same start on the same system, the solutions agree 7x closer).
8. Defaults differ (set equal here): sb3-contrib ``cg_damping=0.1, cg_max_steps=15, line_search_max_iter=10``;
   the meta-learners 1e-5, 10, 15.

Tolerances (float64 / float32); measured values for seed 0, FOMAML and MAML alike, in brackets:

- surrogate gradient and Fisher products: 1e-6 / 1e-5 [3e-8, 6e-8 / 1e-7]. The only differences are
  θ_i − θ = 1e-8·∇L_i and rounding.
- CG direction x and accepted step, relative: within 2x the meta-learner's own variation under another CG start
  (``self_variation``: the same problem solved after another seed), at least 1e-6 / 1e-2 [x 4e-5 vs self 8e-5;
  step 5e-5 vs self 9e-5 / x 1.4e-3-1.8e-3, step 1.6e-3-2e-3]. 1 − cos: 1e-8 / 1e-5 [3e-10 / 6e-7]. In float64 the
  residual is the CG start of item 7: with sb3-contrib's start on sb3-contrib's system the meta-learner's products
  give sb3-contrib's x to 5e-6, 7x closer (asserted 3x). float32 is looser because λ = 1e-5 on a rank-deficient
  Fisher (90 samples x 2 dimensions < 356 parameters) lets 10 CG iterations amplify rounding (eps 6e-8) ~1e4x in
  the step length; the direction stays within 1e-6.
- line search: the same candidate (8 / 7 of 15), step accepted in both.
- KL: sb3-contrib's reported KL times d equals the summed KL(new ‖ old) of its new policy to 1e-9 / 1e-5 [6e-15 /
  4e-6]: its scale and direction, exactly. The meta-learner's reported KL(old ‖ new) equals KL(old ‖ new) at
  sb3-contrib's step within 5x the step tolerance [2e-4 / 7e-3: the KL weighs the step error by the curvature];
  KL(old ‖ new) and KL(new ‖ old) at the accepted step differ by 0.4 % / 0.2 % (asserted < 5 %); reached: 0.865 δ /
  0.84 δ. Surrogate after the step: within 5x the step tolerance [3e-4 / 1e-2].

The test is not vacuous: with ``inner_lr = 0.1`` the directions of MAML and FOMAML differ from TRPO's by 1 − cos
> 0.05 (measured 0.26 and 0.36).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
import sb3_contrib.trpo.trpo as sb3_contrib_trpo
import torch as th
from conftest import point_mass
from sb3_contrib import TRPO
from sb3_contrib.common.utils import conjugate_gradient_solver
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.torch_layers import FlattenExtractor
from torch import nn

import sb3_meta.common.trpo as meta_trpo
from sb3_meta import FOMAML, MAML
from sb3_meta.common.meta_gradient import flatten, unflatten

K, E, T = 3, 3, 10  # tasks, episodes per task, horizon: 90 samples in D'
TARGET_KL, CG_DAMPING, SHRINK = 0.01, 1e-5, 0.8
SHARED: dict[str, Any] = dict(cg_max_steps=10, line_search_max_iter=15, line_search_shrinking_factor=SHRINK)
NET_ARCH = dict(pi=[16, 16], vf=[])
CG_SEED, OTHER_CG_SEED = 1234, 999
VANISHING_LR = 1e-8

TOL = {
    th.float64: dict(problem=1e-6, one_minus_cos=1e-8, identity=1e-9, floor=1e-6),
    th.float32: dict(problem=1e-5, one_minus_cos=1e-5, identity=1e-5, floor=1e-2),
}


class Float64Flatten(FlattenExtractor):
    """SB3's preprocessing casts Box observations to float32: cast the features to float64 for a float64 actor."""

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return super().forward(observations).double()


@dataclasses.dataclass
class Comparison:
    act_dim: int
    g_meta: th.Tensor  # surrogate gradient, from the meta-learner's OuterProblem
    hv_meta: th.Tensor  # KL-Hessian product with a fixed probe (no damping)
    g_sb3: th.Tensor
    hv_sb3: th.Tensor
    x_meta: th.Tensor  # CG solutions
    x_sb3: th.Tensor
    x_sb3_same_start: th.Tensor  # sb3-contrib's system (meta's / d) solved from sb3-contrib's CG start
    x_meta_other_start: th.Tensor  # the meta-learner's system with another CG seed
    shs_sb3: float  # xᵀ(H + λI)x of sb3-contrib's system
    delta_meta: th.Tensor  # actor updates
    delta_sb3: th.Tensor
    delta_meta_other_start: th.Tensor
    meta_stats: dict
    sb3_log: dict
    surrogate_before_meta: float
    kl_forward_sb3: float  # summed KL(π_θ ‖ π_new) of sb3-contrib's new policy, mean over samples
    kl_reverse_sb3: float  # summed KL(π_new ‖ π_θ)

    @property
    def sb3_line_search_steps(self) -> int:
        """Candidates sb3-contrib tried (it does not log them): from its accepted step and its full step."""
        full_step = math.sqrt(2 * TARGET_KL / self.act_dim / self.shs_sb3) * float(self.x_sb3.norm())
        return 1 + round(math.log(float(self.delta_sb3.norm()) / full_step) / math.log(SHRINK))


def rel(a: th.Tensor, b: th.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def one_minus_cos(a: th.Tensor, b: th.Tensor) -> float:
    return 1.0 - float(a @ b / (a.norm() * b.norm()))


def compare_with_sb3_contrib(monkeypatch, algo_cls, inner_lr: float, dtype: th.dtype, seed: int = 0) -> Comparison:
    """One meta-learner outer step and one sb3-contrib ``TRPO.train`` on the same D', advantages and weights."""
    cg: dict[str, dict] = {}
    probe_gen = lambda n: th.randn(n, generator=th.Generator().manual_seed(7), dtype=dtype)  # noqa: E731

    def recording_solver(tag: str):
        def solver(fn, b, max_iter=10):
            x = conjugate_gradient_solver(fn, b, max_iter=max_iter)
            cg.setdefault(tag, dict(b=b.detach().clone(), x=x.detach().clone()))
            if tag == "sb3":  # its graph is freed after train's own product with x: probe it here
                probe = probe_gen(b.numel())
                cg[tag]["hv"] = (fn(probe) - sb3.cg_damping * probe).detach()
                cg[tag]["shs"] = float(x @ fn(x))
            return x

        return solver

    monkeypatch.setattr(meta_trpo, "conjugate_gradient_solver", recording_solver("meta"))
    monkeypatch.setattr(sb3_contrib_trpo, "conjugate_gradient_solver", recording_solver("sb3"))

    # --- the meta-learner: inner loop, then its outer step ------------------------------------------------
    env = point_mass(max_episode_steps=T, seed=seed)
    act_dim = int(np.prod(env.action_space.shape or (1,)))
    model = algo_cls(
        "MlpPolicy", env, meta_batch_size=K, fast_batch_size=E, inner_lr=inner_lr, target_kl=TARGET_KL,
        cg_damping=CG_DAMPING, policy_kwargs=dict(net_arch=NET_ARCH), seed=seed, device="cpu", **SHARED,
    )  # fmt: skip
    model.policy.to(dtype)
    theta = model.meta_parameters()
    result = model.inner_loop().run(theta, model.env, model._sample_tasks(K), model.n_inner_steps, E, sample_last=True)
    assert result is not None
    outer = result.batches[-1].flat()
    n = K * E * T
    assert int(outer["mask"].sum()) == n  # every episode lasts T steps: per-task means = the mean over all samples

    # the meta-learner's TRPO problem, as _outer_step builds it (for the gradient and Fisher comparisons)
    objective = model.make_objective()
    problem = objective.outer_problem(result.inner_path, [b.flat() for b in result.inner_batches], result.adapted, outer)
    surrogate_before, gradient = problem.surrogate_and_gradient()
    g_meta = flatten(gradient)
    probe = probe_gen(g_meta.numel())
    hv_meta = flatten(problem.kl_hvp(unflatten(probe, theta)))

    def damped_meta_hvp(v: th.Tensor) -> th.Tensor:
        return flatten(problem.kl_hvp(unflatten(v, theta))) + CG_DAMPING * v

    th.manual_seed(OTHER_CG_SEED)
    x_meta_other_start = conjugate_gradient_solver(damped_meta_hvp, g_meta, max_iter=SHARED["cg_max_steps"])
    th.manual_seed(CG_SEED)  # sb3-contrib's system (the meta-learner's / d) from sb3-contrib's start
    x_sb3_same_start = conjugate_gradient_solver(
        lambda v: damped_meta_hvp(v) / act_dim, g_meta, max_iter=SHARED["cg_max_steps"]
    )

    th.manual_seed(OTHER_CG_SEED)
    assert model._outer_step(result) is not None
    delta_meta_other_start = flatten(model.meta_parameters()) - flatten(theta)
    model._load_meta_parameters(theta)
    cg.clear()
    th.manual_seed(CG_SEED)
    meta_stats = model._outer_step(result)
    assert meta_stats is not None
    delta_meta = flatten(model.meta_parameters()) - flatten(theta)

    # --- sb3-contrib's TRPO on the same batch, from the same actor -----------------------------------------
    policy_kwargs = dict(net_arch=NET_ARCH, activation_fn=nn.ReLU)  # MetaActorCriticPolicy's default is ReLU
    if dtype == th.float64:
        policy_kwargs["features_extractor_class"] = Float64Flatten
    sb3 = TRPO(
        "MlpPolicy", point_mass(max_episode_steps=T), n_steps=n, batch_size=n, normalize_advantage=False,
        target_kl=TARGET_KL / act_dim, cg_damping=CG_DAMPING / act_dim, n_critic_updates=1,
        policy_kwargs=policy_kwargs, device="cpu", **SHARED,
    )  # fmt: skip
    sb3.policy.to(dtype)
    names = [k for k, _ in sb3.policy.named_parameters() if "value" not in k]  # sb3-contrib's actor parameters
    assert names == list(theta)  # same parameters in the same order: same flattening, same CG start vector
    sb3.policy.load_state_dict({**sb3.policy.state_dict(), **theta})
    sb3.set_logger(Logger(folder=None, output_formats=[]))

    obs, actions, advantages = outer["obs"].reshape(n, -1).to(dtype), outer["actions"].reshape(n, -1), outer["advantages"]
    with th.no_grad():
        old_log_prob = sb3.policy.get_distribution(obs).log_prob(actions)
    np_dtype = np.float64 if dtype == th.float64 else np.float32
    buffer = sb3.rollout_buffer

    def column(x: th.Tensor) -> np.ndarray:  # the buffer's layout (n_steps, n_envs = 1, ...), in the actor's dtype
        return x.detach().cpu().numpy().astype(np_dtype).reshape(n, 1, *x.shape[1:])

    buffer.observations, buffer.actions = column(obs), column(actions)
    buffer.advantages, buffer.log_probs = column(advantages.reshape(n)), column(old_log_prob)
    buffer.values, buffer.returns, buffer.episode_starts = (np.zeros((n, 1), np_dtype) for _ in range(3))
    buffer.full, buffer.pos, buffer.generator_ready = True, n, False
    th.manual_seed(CG_SEED)
    np_state = np.random.get_state()  # the buffer permutes with numpy's global RNG
    sb3.train()
    np.random.set_state(np_state)
    new = dict(sb3.policy.named_parameters())
    new_theta = {k: new[k].detach() for k in names}
    delta_sb3 = flatten(new_theta) - flatten(theta)

    policy = model.policy
    with th.no_grad():
        old_dist, new_dist = policy.functional_dist_params(theta, obs), policy.functional_dist_params(new_theta, obs)
        kl_forward, kl_reverse = policy.kl(old_dist, new_dist).mean(), policy.kl(new_dist, old_dist).mean()

    assert set(cg) == {"meta", "sb3"}, "both TRPO steps should go through conjugate_gradient_solver once"
    return Comparison(
        act_dim=act_dim, g_meta=g_meta, hv_meta=hv_meta, g_sb3=cg["sb3"]["b"], hv_sb3=cg["sb3"]["hv"],
        x_meta=cg["meta"]["x"], x_sb3=cg["sb3"]["x"], x_sb3_same_start=x_sb3_same_start,
        x_meta_other_start=x_meta_other_start, shs_sb3=cg["sb3"]["shs"], delta_meta=delta_meta, delta_sb3=delta_sb3,
        delta_meta_other_start=delta_meta_other_start, meta_stats=meta_stats, sb3_log=dict(sb3.logger.name_to_value),
        surrogate_before_meta=float(surrogate_before), kl_forward_sb3=float(kl_forward), kl_reverse_sb3=float(kl_reverse),
    )  # fmt: skip


@pytest.mark.parametrize("dtype", [th.float64, th.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("algo", [FOMAML, MAML])
def test_vanishing_inner_step_is_trpo(monkeypatch, algo, dtype):
    tol = TOL[dtype]
    c = compare_with_sb3_contrib(monkeypatch, algo, VANISHING_LR, dtype)
    d = c.act_dim

    # the same TRPO problem: gradient, and Fisher up to sb3-contrib's 1/d (KL averaged over action dimensions)
    assert rel(c.g_meta, c.g_sb3) < tol["problem"]
    assert rel(c.hv_meta, d * c.hv_sb3) < tol["problem"]
    assert abs(c.surrogate_before_meta) < 1e-6  # mean of per-task normalised advantages at ratio 1, as sb3-contrib's

    # natural-gradient directions: sb3-contrib solves the system divided by d, so x_sb3 = d x_meta
    self_variation = rel(c.x_meta_other_start, c.x_meta)
    assert one_minus_cos(c.x_meta, c.x_sb3) < tol["one_minus_cos"]
    assert rel(c.x_meta, c.x_sb3 / d) < max(2 * self_variation, tol["floor"])
    if dtype == th.float64:  # the residual is CG's start: from the same start, the systems' solutions agree closer
        assert rel(c.x_sb3_same_start, c.x_sb3) < rel(c.x_meta, c.x_sb3 / d) / 3

    # the accepted steps: same candidate of the line search, same update
    assert c.meta_stats["train/step_accepted"] == 1.0 and c.sb3_log["train/is_line_search_success"] == 1.0
    assert c.meta_stats["train/line_search_steps"] == c.sb3_line_search_steps
    step_variation = rel(c.delta_meta_other_start, c.delta_meta)
    step_tol = max(2 * step_variation, tol["floor"])
    assert one_minus_cos(c.delta_meta, c.delta_sb3) < tol["one_minus_cos"]
    assert rel(c.delta_meta, c.delta_sb3) < step_tol
    assert math.isclose(c.meta_stats["train/step_norm"], float(c.delta_sb3.norm()), rel_tol=step_tol)

    # KL reached: sb3-contrib's is the summed KL(new ‖ old) / d; the meta-learner's KL(old ‖ new) at the same step
    assert math.isclose(c.sb3_log["train/kl_divergence_loss"] * d, c.kl_reverse_sb3, rel_tol=tol["identity"])
    assert math.isclose(c.meta_stats["train/kl"], c.kl_forward_sb3, rel_tol=5 * step_tol)
    assert c.meta_stats["train/kl"] <= TARGET_KL and c.kl_reverse_sb3 < TARGET_KL
    assert abs(c.kl_forward_sb3 - c.kl_reverse_sb3) < 0.05 * c.kl_forward_sb3  # third order in the step
    # surrogate after the step
    surrogate_after_meta = c.surrogate_before_meta + c.meta_stats["train/surrogate_improvement"]
    assert surrogate_after_meta > c.surrogate_before_meta
    assert math.isclose(surrogate_after_meta, c.sb3_log["train/policy_objective"], rel_tol=5 * step_tol)


@pytest.mark.parametrize("algo", [FOMAML, MAML])
def test_real_inner_step_differs_from_trpo(monkeypatch, algo):
    """Not vacuous: with inner_lr = 0.1 the meta-update points elsewhere than TRPO's on the same D' (FOMAML: the
    gradient at θ_i; MAML: also through J_i = I − α∇²L_i)."""
    c = compare_with_sb3_contrib(monkeypatch, algo, 0.1, th.float64)
    assert one_minus_cos(c.delta_meta, c.delta_sb3) > 0.05
    assert rel(c.g_meta, c.g_sb3) > 1e-3
