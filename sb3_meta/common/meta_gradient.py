"""The maths shared by MAML, FOMAML and Reptile, batched over tasks with ``torch.func``.

Notation: θ meta-parameters, task i with inner batches D_i^(0..n-1) and outer batch D_i', inner loss
L_i(θ) = −E_{D_i}[log π_θ(a|s) Â], inner learning rate α.

- inner step (all algorithms):     θ_i = θ − α ∇L_i(θ)                          (:meth:`MetaObjective.adapt`)
- or Adam with β1 = 0 (first order): v_i ← β2 v_i + (1 − β2) g_i²,  θ_i ← θ_i − α g_i / (√(v_i / (1 − β2^s)) + ϵ)
- a step on reused episodes (Reptile): L_i(θ) = −E_{D_i^(0)}[min(r Â, clip(r, 1 ± c) Â)],  r = π_θ(a|s)/π_{θ^(0)}(a|s)
- MAML outer objective (TRPO):      max mean_i E_{D_i'}[π_{θ_i(θ)}/π_old Â]  s.t.  mean_i KL(π_old ‖ π_{θ_i(θ)}) ≤ δ
- MAML meta-gradient:               g = mean_i J_iᵀ ∇s_i(θ_i),  J_i = ∂θ_i/∂θ = I − α∇²L_i(θ)   (:class:`OuterProblem`)
- MAML KL Hessian at θ_old:         H = mean_i J_iᵀ F_i J_i                                     (:class:`OuterProblem`)
- FOMAML:                           θ_i := θ + stop_grad(θ_i − θ), so J_i = I: ∇ = mean_i ∇L'_i(θ_i)
- Reptile:                          θ ← θ + ε mean_i(θ_i − θ)

Parameter sets are dicts name → tensor; a *stacked* set has a leading task dimension K.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch as th
from torch.func import grad, jvp, vmap

from sb3_meta.common.policies import DistParams, MetaActorCriticPolicy, Params

__all__ = ["INNER_OPTIMIZERS", "AdamMoments", "MetaObjective", "OuterProblem", "flatten", "stack_params", "unflatten"]

#: The inner step's optimisers: ``"sgd"`` (the VPG step θ − α∇L) and ``"adam"`` (Adam with β1 = 0, as the
#: inner optimiser of the original Reptile code; its second moments start afresh for each adaptation).
INNER_OPTIMIZERS = ("sgd", "adam")

Batch = dict[str, th.Tensor]


def flatten(params: Params) -> th.Tensor:
    return th.cat([p.reshape(-1) for p in params.values()])


def unflatten(vector: th.Tensor, like: Params) -> Params:
    out, i = {}, 0
    for name, p in like.items():
        out[name] = vector[i : i + p.numel()].view_as(p)
        i += p.numel()
    return out


def stack_params(params: Params, n_tasks: int) -> Params:
    """The same parameter set for every task: leading dimension K (differentiable w.r.t. ``params``)."""
    return {k: v.unsqueeze(0).expand(n_tasks, *v.shape).contiguous() for k, v in params.items()}


def _masked_mean(x: th.Tensor, mask: th.Tensor) -> th.Tensor:
    # th.where, not x * mask: a non-finite value past an episode's end must not reach the sum (NaN * 0 = NaN)
    return th.where(mask > 0, x, th.zeros_like(x)).sum() / mask.sum().clamp_min(1.0)


@dataclasses.dataclass
class AdamMoments:
    """The state of the ``"adam"`` inner optimiser over one adaptation: per-task second moments, steps taken."""

    second_moment: Params | None = None
    steps: int = 0


class MetaObjective:
    """Per-task losses of one meta-policy and their task-batched derivatives.

    :param policy: the meta-policy (its functional actor is used; its own parameters are not touched)
    :param inner_lr: α, the inner (adaptation) learning rate
    :param first_order: FOMAML: no gradient through the inner update (J = I)
    :param inner_optimizer: ``"sgd"`` (θ − α∇L) or ``"adam"`` (Adam with β1 = 0; first order only: the second-order
        meta-gradient differentiates the plain VPG step)
    :param adam_beta2: β2 of the ``"adam"`` inner optimiser
    :param adam_eps: ϵ of the ``"adam"`` inner optimiser
    :param reuse_clip_range: c of PPO's clipped surrogate for inner steps on reused episodes (None: unclipped ratio)
    """

    def __init__(
        self,
        policy: MetaActorCriticPolicy,
        inner_lr: float,
        first_order: bool,
        inner_optimizer: str = "sgd",
        adam_beta2: float = 0.999,
        adam_eps: float = 1e-8,
        reuse_clip_range: float | None = 0.2,
    ) -> None:
        if inner_optimizer not in INNER_OPTIMIZERS:
            raise ValueError(f"inner_optimizer must be one of {INNER_OPTIMIZERS}, got {inner_optimizer!r}")
        if inner_optimizer != "sgd" and not first_order:
            raise ValueError(
                f"inner_optimizer={inner_optimizer!r} needs a first-order meta-gradient (FOMAML, Reptile): "
                "second-order MAML differentiates the VPG step θ − α∇L; use inner_optimizer='sgd'"
            )
        self.policy = policy
        self.inner_lr = inner_lr
        self.first_order = first_order
        self.inner_optimizer = inner_optimizer
        self.adam_beta2 = adam_beta2
        self.adam_eps = adam_eps
        self.reuse_clip_range = reuse_clip_range

    # --- per-task scalar functions (un-batched; vmap adds the task dimension) -----------------------------
    def inner_loss(self, params: Params, batch: Batch) -> th.Tensor:
        """VPG loss L_i(θ) = −mean_t log π_θ(a_t|s_t) Â_t over the task's valid steps."""
        dist = self.policy.functional_dist_params(params, batch["obs"])
        return -_masked_mean(self.policy.log_prob(dist, batch["actions"]) * batch["advantages"], batch["mask"])

    def reused_inner_loss(self, params: Params, batch: Batch) -> th.Tensor:
        """L_i on episodes sampled by another policy π_b: PPO's clipped surrogate, −mean_t min(r_t Â_t, clip(r_t,
        1 − c, 1 + c) Â_t) with r_t = π_θ(a_t|s_t)/π_b(a_t|s_t) and c = ``reuse_clip_range`` (None: −mean_t r_t Â_t;
        ``batch`` holds log π_b as ``behaviour_log_prob``). Its gradient at π_θ = π_b is the VPG gradient. Not the
        plain VPG loss: on reused episodes it keeps raising the likelihood of the same actions (measured on PointMass,
        docs/results.md: parameters non-finite within 2M env steps)."""
        dist = self.policy.functional_dist_params(params, batch["obs"])
        ratio = th.exp(self.policy.log_prob(dist, batch["actions"]) - batch["behaviour_log_prob"])
        advantages, c = batch["advantages"], self.reuse_clip_range
        if c is None:  # the plain importance-weighted loss
            return -_masked_mean(ratio * advantages, batch["mask"])
        return -_masked_mean(th.minimum(ratio * advantages, ratio.clamp(1 - c, 1 + c) * advantages), batch["mask"])

    def surrogate(self, params: Params, batch: Batch, old_log_prob: th.Tensor) -> th.Tensor:
        """TRPO surrogate E[π_θ(a|s) / π_old(a|s) · Â] (to maximise)."""
        return self.surrogate_of_dist(self.policy.functional_dist_params(params, batch["obs"]), batch, old_log_prob)

    def surrogate_of_dist(self, dist: DistParams, batch: Batch, old_log_prob: th.Tensor) -> th.Tensor:
        ratio = th.exp(self.policy.log_prob(dist, batch["actions"]) - old_log_prob)
        return _masked_mean(ratio * batch["advantages"], batch["mask"])

    def kl(self, params: Params, batch: Batch, old_dist: DistParams) -> th.Tensor:
        """mean_t KL(π_old(·|s_t) ‖ π_θ(·|s_t))."""
        return self.kl_of_dist(self.policy.functional_dist_params(params, batch["obs"]), batch, old_dist)

    def kl_of_dist(self, dist: DistParams, batch: Batch, old_dist: DistParams) -> th.Tensor:
        return _masked_mean(self.policy.kl(old_dist, dist), batch["mask"])

    # --- inner loop -------------------------------------------------------------------------------------
    def inner_step(
        self,
        params: Params,
        batch: Batch,
        shared: bool,
        create_graph: bool,
        step_size: float | None = None,
        moments: AdamMoments | None = None,
        reused: bool = False,
    ) -> Params:
        """θ_i = θ − α ∇L_i(θ) for every task at once (or Adam's step). ``shared``: ``params`` is one set for all tasks.

        ``step_size``: α for this step (default ``inner_lr``; test-time adaptation may use a schedule).
        ``moments``: the ``"adam"`` optimiser's state over this adaptation, updated in place (None: a first step).
        ``reused``: ``batch`` was sampled by an earlier policy (its ``behaviour_log_prob``): :meth:`reused_inner_loss`.
        """
        loss = self.reused_inner_loss if reused else self.inner_loss
        grads = vmap(grad(loss), in_dims=(None if shared else 0, 0))(params, batch)
        if not create_graph:
            grads = {k: g.detach() for k, g in grads.items()}
        alpha = self.inner_lr if step_size is None else step_size
        if self.inner_optimizer == "adam":
            grads = self._adam_direction(grads, AdamMoments() if moments is None else moments)
        return {k: params[k] - alpha * grads[k] for k in params}

    def _adam_direction(self, grads: Params, moments: AdamMoments) -> Params:
        """g / (√v̂ + ϵ), with v ← β2 v + (1 − β2) g² and v̂ = v / (1 − β2^s): Adam's step with β1 = 0, as the original
        Reptile code's inner optimiser (no momentum: each step follows the gradient of its own episodes)."""
        beta2 = self.adam_beta2
        previous = moments.second_moment
        moments.second_moment = {
            k: (1 - beta2) * g.square() + (0.0 if previous is None else beta2 * previous[k]) for k, g in grads.items()
        }
        moments.steps += 1
        correction = 1 - beta2**moments.steps
        return {k: g / ((moments.second_moment[k] / correction).sqrt() + self.adam_eps) for k, g in grads.items()}

    def adapt(self, theta: Params, inner_batches: list[Batch], create_graph: bool = False) -> tuple[Params, list[Params]]:
        """Run the inner steps from θ on the stored inner batches.

        :param theta: meta-parameters (shared by all tasks)
        :param inner_batches: one flattened batch per inner step (tensors with a leading task dimension)
        :param create_graph: keep the graph through the inner gradients (second-order MAML)
        :return: the adapted stacked parameters θ_i and the (detached) parameters at each inner step
        """
        n_tasks = inner_batches[0]["obs"].shape[0]
        path: list[Params] = []
        params, shared, moments = theta, True, AdamMoments()
        for batch in inner_batches:
            stacked = stack_params(params, n_tasks) if shared else params
            path.append({k: v.detach() for k, v in stacked.items()})
            params = self.inner_step(params, batch, shared=shared, create_graph=create_graph, moments=moments)
            shared = False
        return params, path

    def adapted_for_meta_gradient(self, theta: Params, inner_batches: list[Batch], adapted: Params | None = None) -> Params:
        """θ_i(θ) as the outer objective sees it: MAML keeps the graph, FOMAML uses θ + stop_grad(θ_i − θ).

        ``adapted``: θ_i already computed at this θ (FOMAML then needs no inner step at all).
        """
        if not self.first_order:
            return self.adapt(theta, inner_batches, create_graph=True)[0]
        if adapted is None:
            adapted, _ = self.adapt(theta, inner_batches, create_graph=False)
        stacked = stack_params(theta, inner_batches[0]["obs"].shape[0])
        return {k: stacked[k] + (adapted[k] - stacked[k]).detach() for k in theta}

    # --- outer objective ---------------------------------------------------------------------------------
    def old_policy(self, adapted: Params, outer: Batch) -> tuple[th.Tensor, DistParams]:
        """log π_old(a|s) and the distribution of the adapted policies on the outer batch (constants for TRPO)."""
        with th.no_grad():
            adapted = {k: v.detach() for k, v in adapted.items()}  # vmap passes log_std through unchanged
            dist = vmap(self.policy.functional_dist_params)(adapted, outer["obs"])
            log_prob = vmap(self.policy.log_prob)(dist, outer["actions"])
        return log_prob, dist

    def outer_surrogate_and_kl(
        self, adapted: Params, outer: Batch, old_log_prob: th.Tensor, old_dist: DistParams
    ) -> tuple[th.Tensor, th.Tensor]:
        """mean over tasks of the surrogate and of the KL, at the adapted parameters (one forward pass for both)."""
        dist = vmap(self.policy.functional_dist_params)(adapted, outer["obs"])
        surrogate = vmap(self.surrogate_of_dist)(dist, outer, old_log_prob).mean()
        kl = vmap(self.kl_of_dist)(dist, outer, old_dist).mean()
        return surrogate, kl

    def outer_problem(
        self, path: list[Params], inner_batches: list[Batch], adapted: Params, outer: Batch, sub_sampling_factor: int = 1
    ) -> OuterProblem:
        """The TRPO problem of a meta-step at the current θ (see :class:`OuterProblem`)."""
        return OuterProblem(self, path, inner_batches, adapted, outer, sub_sampling_factor)

    # --- KL Hessian-vector products ------------------------------------------------------------------
    def inner_hvp_fn(self, params: Params, batch: Batch) -> Callable[[Params], Params]:
        """u_i ↦ ∇²L_i(params_i) u_i for every task (params, batch and u stacked over tasks).

        The graph of the per-task inner gradients is built once and every product differentiates it again
        (reverse over reverse): each CG iteration then costs one backward pass, with no forward recomputation.
        The graph is plain autograd's, of ∇ Σ_i L_i(p_i) (row i of that gradient is ∇L_i(p_i): tasks are
        independent), rather than that of ``vmap(grad(L))``, whose functorch levels make it slower to differentiate.
        """
        names = list(params)
        with th.enable_grad():
            leaves = {k: params[k].detach().requires_grad_(True) for k in names}
            total = vmap(self.inner_loss)(leaves, batch).sum()
            grads = th.autograd.grad(total, [leaves[k] for k in names], create_graph=True)

        def product(vector: Params) -> Params:
            # Σ_i ⟨∇L_i(p_i), u_i⟩ differentiated w.r.t. the stacked p: row i is ∇²L_i u_i
            out = th.autograd.grad(grads, [leaves[k] for k in names], [vector[k] for k in names], retain_graph=True)
            return dict(zip(names, out))

        return product

    def kl_hvp(
        self,
        path: list[Params],
        inner_batches: list[Batch],
        adapted: Params,
        outer: Batch,
    ) -> Callable[[Params], Params]:
        """v ↦ mean_i J_iᵀ F_i J_i v at the current θ (J_i = I when ``first_order``); the Fisher F_i is that of
        π_old = π_{θ_i} at ``adapted``, computed from the adapted parameters."""
        return self.outer_problem(path, inner_batches, adapted, outer).kl_hvp

    def kl_of_theta(self, theta: Params, inner_batches: list[Batch], outer: Batch, old_dist: DistParams) -> th.Tensor:
        """mean_i KL(π_old ‖ π_{θ_i(θ)}) as a differentiable function of θ (graph through the inner step)."""
        adapted = self.adapted_for_meta_gradient(theta, inner_batches)
        return vmap(self.kl)(adapted, outer, old_dist).mean()

    def kl_hvp_finite_difference(
        self, theta: Params, inner_batches: list[Batch], outer: Batch, old_dist: DistParams, base_eps: float = 1e-5
    ) -> Callable[[Params], Params]:
        """HVP by finite differences of the KL gradient, (∇KL(θ + εv) − ∇KL(θ)) / ε (as the original MAML code)."""
        names = list(theta)
        n_tasks = outer["obs"].shape[0]
        if self.first_order:  # FOMAML's θ_i = θ + stop_grad(θ_i − θ): hold the inner step fixed at the current θ
            adapted, _ = self.adapt(theta, inner_batches)
            stacked = stack_params(theta, n_tasks)
            delta = {k: (adapted[k] - stacked[k]).detach() for k in names}

        def kl_grad(point: Params) -> th.Tensor:
            leaves = {k: point[k].detach().requires_grad_(True) for k in names}
            if self.first_order:
                stacked_leaves = stack_params(leaves, n_tasks)
                kl = vmap(self.kl)({k: stacked_leaves[k] + delta[k] for k in names}, outer, old_dist).mean()
            else:
                kl = self.kl_of_theta(leaves, inner_batches, outer, old_dist)
            return flatten(dict(zip(names, th.autograd.grad(kl, [leaves[k] for k in names]))))

        base_grad = kl_grad(theta)
        theta_flat = flatten(theta).detach()
        eps = base_eps / (theta_flat.norm() + 1e-8)

        def product(v: Params) -> Params:
            shifted = unflatten(theta_flat + eps * flatten(v), theta)
            return unflatten((kl_grad(shifted) - base_grad) / eps, theta)

        return product


class OuterProblem:
    """The TRPO problem of one MAML/FOMAML meta-step, at the current θ, built once and queried by TRPO.

    Holds one forward pass of the adapted policies θ_i on the outer batch D_i' (its reverse graph kept: the
    old policy π_old, the surrogate gradient and the reverse half of every Fisher product come from it) and,
    for MAML, the graphs of the inner gradients at each inner step θ_i^(s). With J_i = Π_s (I − α∇²L_i^(s)) the
    Jacobian of the inner update (J_i = I for FOMAML) and F_i the Fisher matrix of π_{θ_i} on D_i':

    - meta-gradient   g   = mean_i J_iᵀ ∇_{θ_i} s_i(θ_i)      one reverse pass + n inner HVPs
    - KL Hessian      H v = mean_i J_iᵀ F_i J_i v               one forward-mode pass + one reverse pass + 2n inner HVPs

    The KL Hessian equals the Hessian of mean_i KL(π_old ‖ π_{θ_i(θ)}) at θ exactly: the KL's gradient is zero
    there, so the curvature of θ_i(θ) drops out (tests compare it with a third-order double backward).

    :param objective: the per-task losses
    :param path: stacked parameters θ_i^(s) at each inner step (θ_i^(0) = θ), detached
    :param inner_batches: one flattened batch per inner step
    :param adapted: the adapted stacked parameters θ_i (the policies that sampled ``outer``)
    :param outer: the flattened outer batch D_i'
    :param sub_sampling_factor: the Fisher products F_i use every k-th sample of each task's D_i' (1: all); the
        meta-gradient, π_old and the line search always use all of D_i'
    """

    def __init__(
        self,
        objective: MetaObjective,
        path: list[Params],
        inner_batches: list[Batch],
        adapted: Params,
        outer: Batch,
        sub_sampling_factor: int = 1,
    ) -> None:
        policy = objective.policy
        self.objective, self.outer = objective, outer
        self.n_tasks = outer["obs"].shape[0]
        self._adapted = {k: v.detach() for k, v in adapted.items()}
        self._names = list(adapted)
        self._dist_fn = lambda p, obs: vmap(policy.functional_dist_params)(p, obs)
        with th.enable_grad():
            self._leaves, self._dist = self._forward(outer["obs"])
        # loc is never None, which the generator's element type (Tensor | None) cannot say (also below)
        self.old_dist = DistParams(*(None if t is None else t.detach() for t in self._dist))  # type: ignore[arg-type]
        self.old_log_prob = vmap(policy.log_prob)(self.old_dist, outer["actions"])
        self._inner_hvps = [] if objective.first_order else [objective.inner_hvp_fn(p, b) for p, b in zip(path, inner_batches)]
        # The Fisher products' samples: every sub_sampling_factor-th of each task's D_i' (the curvature needs fewer
        # samples than the gradient: TRPO's Fisher products used 10 %), with their own forward pass and kept graph
        if sub_sampling_factor == 1:
            self._fisher_leaves, self._fisher_dist, self._fisher_old_dist = self._leaves, self._dist, self.old_dist
            fisher_obs, fisher_mask = outer["obs"], outer["mask"]
        else:
            fisher_obs, fisher_mask = outer["obs"][:, ::sub_sampling_factor], outer["mask"][:, ::sub_sampling_factor]
            with th.enable_grad():
                self._fisher_leaves, self._fisher_dist = self._forward(fisher_obs)
            self._fisher_old_dist = DistParams(*(None if t is None else t.detach() for t in self._fisher_dist))  # type: ignore[arg-type]
        self._fisher_weights = fisher_mask / fisher_mask.sum(dim=1, keepdim=True).clamp_min(1.0)  # each task's mean
        # forward-mode half of the Fisher products: the actor linearised once (plain MLPs), else torch.func.jvp
        self._tangent_fn = policy.actor_tangent_fn(self._adapted, fisher_obs, reference=self._fisher_old_dist) or (
            lambda u: jvp(lambda p: self._dist_fn(p, fisher_obs), (self._adapted,), (u,))[1]
        )

    def _forward(self, obs: th.Tensor) -> tuple[Params, DistParams]:
        """Leaves θ_i (requiring grad) and the adapted policies' distribution parameters on ``obs``, graph kept."""
        leaves = {k: v.detach().requires_grad_(True) for k, v in self._adapted.items()}
        return leaves, self._dist_fn(leaves, obs)

    def _network_vjp(self, cotangent: DistParams, fisher: bool = False) -> Params:
        """(∂dist/∂θ_i)ᵀ c for every task, through the kept forward graph (of the Fisher samples if ``fisher``)."""
        dist, leaves = (self._fisher_dist, self._fisher_leaves) if fisher else (self._dist, self._leaves)
        outputs = [t for t in dist if t is not None]
        cotangents = [t for t in cotangent if t is not None]
        grads = th.autograd.grad(outputs, [leaves[k] for k in self._names], cotangents, retain_graph=True)
        return dict(zip(self._names, grads))

    def _jacobian_vp(self, u: Params) -> Params:
        """u ↦ J u, J = Π_s (I − α∇²L^(s)) (applied from the first inner step on)."""
        for inner_hvp in self._inner_hvps:
            hu = inner_hvp(u)
            u = {k: u[k] - self.objective.inner_lr * hu[k] for k in u}
        return u

    def _jacobian_tvp(self, w: Params) -> Params:
        """w ↦ Jᵀ w: the same factors in reverse order (each is symmetric)."""
        for inner_hvp in reversed(self._inner_hvps):
            hw = inner_hvp(w)
            w = {k: w[k] - self.objective.inner_lr * hw[k] for k in w}
        return w

    def surrogate_and_gradient(self) -> tuple[th.Tensor, Params]:
        """S = mean_i s_i at θ (ratios are 1) and g = ∇_θ S = mean_i J_iᵀ ∇_{θ_i} s_i."""
        with th.enable_grad():
            dist = DistParams(*(None if t is None else t.clone().requires_grad_(True) for t in self.old_dist))  # type: ignore[arg-type]
            surrogate = vmap(self.objective.surrogate_of_dist)(dist, self.outer, self.old_log_prob).mean()
            inputs = [t for t in dist if t is not None]
            cotangent = iter(th.autograd.grad(surrogate, inputs))
        per_task = self._network_vjp(DistParams(*(None if t is None else next(cotangent) for t in dist)))  # type: ignore[arg-type]
        per_task = self._jacobian_tvp(per_task)  # the 1/K of the task mean is already in the cotangent: sum
        return surrogate.detach(), {k: v.sum(dim=0) for k, v in per_task.items()}

    def kl_hvp(self, v: Params) -> Params:
        """v ↦ H v = mean_i J_iᵀ F_i J_i v, with F_i u = (∂dist/∂θ_i)ᵀ (∂²KL/∂dist²) (∂dist/∂θ_i) u."""
        u = self._jacobian_vp(stack_params(v, self.n_tasks))  # u_i = J_i v
        tangent = self._tangent_fn(u)  # ∂dist/∂θ_i u_i (forward mode)
        policy = self.objective.policy
        w = self._network_vjp(
            policy.fisher_product(self._fisher_old_dist, tangent, self._fisher_weights), fisher=True
        )  # F_i u_i
        w = self._jacobian_tvp(w)  # J_iᵀ w_i
        return {k: w[k].mean(dim=0) for k in w}
