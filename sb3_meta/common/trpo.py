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

__all__ = ["TRPOStats", "trpo_step"]


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

    direction = conjugate_gradient_solver(damped_hvp, g, max_iter=cg_max_steps)
    shs = th.dot(direction, damped_hvp(direction))
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
