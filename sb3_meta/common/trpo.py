"""TRPO's natural-gradient step with a backtracking line search, on a parameter dict.

The search direction solves ``(H + damping I) s = g`` with sb3-contrib's conjugate gradient, where ``g`` is
the surrogate gradient and ``H`` the KL Hessian (for MAML, through the inner update). The step is scaled
to the trust region ``½ sᵀHs = target_kl`` and shrunk until the KL bound holds and the surrogate improves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch as th
from sb3_contrib.common.utils import conjugate_gradient_solver

from sb3_meta.common.meta_gradient import flatten, unflatten
from sb3_meta.common.policies import Params

__all__ = ["TRPOStats", "conjugate_gradient_with_product", "trpo_step"]


@dataclasses.dataclass
class TRPOStats:
    surrogate_before: float
    surrogate_after: float
    kl: float
    line_search_steps: int
    accepted: bool
    step_norm: float

    @property
    def surrogate_improvement(self) -> float:
        return self.surrogate_after - self.surrogate_before


def conjugate_gradient_with_product(
    matrix_vector_dot_fn: Callable[[th.Tensor], th.Tensor], b: th.Tensor, max_iter: int = 10
) -> tuple[th.Tensor, th.Tensor]:
    """sb3-contrib's ``conjugate_gradient_solver`` for A x = b, returning x and also A x without another product.

    CG's x is x0 + Σ_k α_k p_k over the vectors it multiplied by A, so A x = A x0 + Σ_k α_k A p_k: the products
    are recorded and the coefficients recovered by least squares (float64). TRPO's step length needs xᵀAx, and
    one product costs as much as a CG iteration (for MAML, two inner HVPs and a Fisher product). If the
    recorded vectors do not reproduce x to 1e-6 (relative), A x is computed explicitly instead.
    """
    inputs: list[th.Tensor] = []
    outputs: list[th.Tensor] = []

    def recording(v: th.Tensor) -> th.Tensor:
        out = matrix_vector_dot_fn(v)
        inputs.append(v.detach().clone())
        outputs.append(out.detach().clone())
        return out

    x = conjugate_gradient_solver(recording, b, max_iter=max_iter)
    # a (parameters x products) least-squares problem: solved on the CPU, where lstsq handles any rank
    basis, target = th.stack(inputs, dim=1).double().cpu(), x.detach().double().cpu()
    coefficients = th.linalg.lstsq(basis, target.unsqueeze(1), driver="gelsd").solution
    if float((basis @ coefficients).squeeze(1).sub(target).norm()) > 1e-6 * float(target.norm()) + 1e-30:
        return x, matrix_vector_dot_fn(x)
    product = th.stack(outputs, dim=1).double().cpu() @ coefficients
    return x, product.squeeze(1).to(device=x.device, dtype=x.dtype)


def trpo_step(
    theta: Params,
    gradient: Params,
    hvp: Callable[[Params], Params],
    evaluate: Callable[[Params], tuple[float, float]],
    surrogate_before: float,
    target_kl: float,
    cg_max_steps: int = 10,
    cg_damping: float = 1e-5,
    line_search_max_iter: int = 15,
    line_search_shrinking_factor: float = 0.8,
) -> tuple[Params, TRPOStats]:
    """One trust-region step from ``theta``; returns the new parameters (``theta`` itself if rejected).

    :param theta: current parameters (detached)
    :param gradient: ∇ of the surrogate at ``theta``
    :param hvp: v ↦ H v, the KL Hessian at ``theta``
    :param evaluate: candidate ↦ (surrogate, KL) at the candidate parameters (no gradient)
    :param surrogate_before: surrogate at ``theta``
    :param target_kl: trust-region size δ
    :param cg_max_steps: conjugate-gradient iterations
    :param cg_damping: damping added to the Hessian-vector product
    :param line_search_max_iter: candidates tried
    :param line_search_shrinking_factor: step multiplier between candidates
    """
    g = flatten(gradient).detach()

    def damped_hvp(v: th.Tensor) -> th.Tensor:
        return flatten(hvp(unflatten(v, theta))).detach() + cg_damping * v

    direction, h_direction = conjugate_gradient_with_product(damped_hvp, g, max_iter=cg_max_steps)
    shs = th.dot(direction, h_direction)
    # largest step along s with the quadratic KL model ½ sᵀHs equal to target_kl
    step_size = th.sqrt(2 * target_kl / shs.clamp_min(1e-12))
    full_step = step_size * direction
    theta_flat = flatten(theta).detach()

    coefficient = 1.0
    for i in range(line_search_max_iter):
        candidate = unflatten(theta_flat + coefficient * full_step, theta)
        surrogate, kl = evaluate(candidate)
        if kl <= target_kl and surrogate > surrogate_before:
            stats = TRPOStats(surrogate_before, surrogate, kl, i + 1, True, float(coefficient * full_step.norm()))
            return {k: v.clone() for k, v in candidate.items()}, stats
        coefficient *= line_search_shrinking_factor
    return theta, TRPOStats(surrogate_before, surrogate_before, 0.0, line_search_max_iter, False, 0.0)
