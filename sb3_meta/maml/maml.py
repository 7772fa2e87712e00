"""MAML with a TRPO outer loop, and its first-order approximation FOMAML."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import torch as th
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback

from sb3_meta.common.adaptation import InnerLoopResult
from sb3_meta.common.base_class import MetaAlgorithm
from sb3_meta.common.meta_gradient import MetaObjective, flatten
from sb3_meta.common.policies import MetaActorCriticPolicy, Params
from sb3_meta.common.trpo import trpo_step
from sb3_meta.common.utils import check_int, check_positive_float
from sb3_meta.maml.policies import MlpPolicy

SelfMAML = TypeVar("SelfMAML", bound="MAML")


class MAML(MetaAlgorithm):
    """
    Model-Agnostic Meta-Learning for RL (Finn et al., 2017), second order, with a TRPO meta-optimiser.

    Paper: https://arxiv.org/abs/1703.03400 ; first-order variant: the project paper
    *First-order Meta-Learned Initialization for Faster Adaptation in Deep RL*.

    Inner step (per task, batched over tasks): vanilla policy gradient with a linear feature baseline,
    θ_i = θ − α∇L_i(θ). Outer step: TRPO on the post-adaptation episodes,
    max_θ mean_i E[π_{θ_i(θ)}/π_old · Â] s.t. mean_i KL(π_old ‖ π_{θ_i(θ)}) ≤ target_kl, differentiating
    through the inner update (``first_order=False``) or not (``first_order=True``: FOMAML).

    :param policy: The policy model to use (MlpPolicy)
    :param env: a task distribution, a registered id (e.g. ``"sb3_meta/AntVel-v0"``), a task VecEnv or an SB3 VecEnv of
        task distributions (``make_vec_env``), with ``meta_batch_size * fast_batch_size`` sub-envs
    :param meta_batch_size: tasks per meta-iteration (40)
    :param fast_batch_size: episodes per task and sampling pass (20)
    :param inner_lr: α, inner VPG learning rate (0.1)
    :param n_inner_steps: inner steps, each on fresh episodes (1)
    :param gamma: discount factor (0.99)
    :param gae_lambda: GAE λ (1.0)
    :param target_kl: TRPO trust region δ on mean KL(π_old ‖ π_new) (0.01)
    :param cg_max_steps: conjugate-gradient iterations (10)
    :param cg_damping: damping added to the Hessian-vector product (1e-5)
    :param sub_sampling_factor: the KL Hessian's Fisher products use every k-th sample of each task's
        post-adaptation episodes (1: all, as the MAML paper). Larger values make the meta-step cheaper; the
        meta-gradient and the line search (which enforces the trust region) always use every sample. As
        sb3-contrib TRPO's parameter of that name, except that sb3-contrib subsamples the gradient too
    :param line_search_max_iter: backtracking line-search candidates (15)
    :param line_search_shrinking_factor: step multiplier between candidates (0.8)
    :param hvp: ``"exact"`` (J^T F J with inner-loss HVPs) or ``"finite_difference"`` (as the original code)
    :param first_order: FOMAML (no gradient through the inner update)
    :param max_episode_steps: episode horizon (default: the env's)
    :param normalize_advantage: normalise advantages per task
    :param max_nonfinite_iterations: consecutive non-finite iterations tolerated before an error
    :param stats_window_size: Window size for the rollout logging
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
    :param verbose: 0 no output, 1 info, 2 debug
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    policy_aliases: ClassVar[dict[str, type[MetaActorCriticPolicy]]] = {"MlpPolicy": MlpPolicy}

    def __init__(
        self,
        policy: str | type[MetaActorCriticPolicy],
        env: GymEnv | str | None,
        meta_batch_size: int = 40,
        fast_batch_size: int = 20,
        inner_lr: float = 0.1,
        n_inner_steps: int = 1,
        gamma: float = 0.99,
        gae_lambda: float = 1.0,
        target_kl: float = 0.01,
        cg_max_steps: int = 10,
        cg_damping: float = 1e-5,
        sub_sampling_factor: int = 1,
        line_search_max_iter: int = 15,
        line_search_shrinking_factor: float = 0.8,
        hvp: str = "exact",
        first_order: bool = False,
        max_episode_steps: int | None = None,
        normalize_advantage: bool = True,
        max_nonfinite_iterations: int = 3,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        self.target_kl = check_positive_float("target_kl", target_kl)
        self.cg_max_steps = check_int("cg_max_steps", cg_max_steps)
        if not float(cg_damping) >= 0:
            raise ValueError(f"cg_damping must be >= 0, got {cg_damping!r}")
        self.cg_damping = float(cg_damping)
        self.line_search_max_iter = check_int("line_search_max_iter", line_search_max_iter)
        if not 0.0 < float(line_search_shrinking_factor) < 1.0:
            raise ValueError(f"line_search_shrinking_factor must lie in (0, 1), got {line_search_shrinking_factor!r}")
        self.line_search_shrinking_factor = float(line_search_shrinking_factor)
        if hvp not in ("exact", "finite_difference"):
            raise ValueError(f"hvp must be 'exact' or 'finite_difference', got {hvp!r}")
        self.hvp = hvp
        self.sub_sampling_factor = check_int("sub_sampling_factor", sub_sampling_factor)
        if self.sub_sampling_factor > 1 and hvp != "exact":
            raise ValueError(
                f"sub_sampling_factor={sub_sampling_factor} needs hvp='exact' (the finite-difference KL Hessian uses"
                " every sample): pass hvp='exact' or sub_sampling_factor=1"
            )
        self.first_order = bool(first_order)
        super().__init__(
            policy,
            env,
            meta_batch_size=meta_batch_size,
            fast_batch_size=fast_batch_size,
            inner_lr=inner_lr,
            n_inner_steps=n_inner_steps,
            gamma=gamma,
            gae_lambda=gae_lambda,
            max_episode_steps=max_episode_steps,
            normalize_advantage=normalize_advantage,
            max_nonfinite_iterations=max_nonfinite_iterations,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=_init_setup_model,
        )

    def make_objective(self) -> MetaObjective:
        return MetaObjective(self.policy, self.inner_lr, first_order=self.first_order, inner_optimizer=self.inner_optimizer)

    def _outer_step(self, result: InnerLoopResult) -> dict[str, float] | None:
        objective = self.make_objective()
        inner = [b.flat() for b in result.inner_batches]  # D_i^(0..n-1): the episodes each inner step was computed on
        outer = result.batches[-1].flat()  # D_i': episodes of the adapted policies
        theta, adapted = self.meta_parameters(), result.adapted

        # The TRPO problem at θ, built once: one forward pass of the adapted policies θ_i on D_i' (π_old = π_{θ_i})
        # and, for MAML, the graphs of the inner gradients along the inner-loop path θ_i^(s) (reused, not recomputed)
        problem = objective.outer_problem(result.inner_path, inner, adapted, outer, self.sub_sampling_factor)
        old_log_prob, old_dist = problem.old_log_prob, problem.old_dist

        # Meta-gradient g = ∇_θ mean_i E_{D_i'}[π_{θ_i(θ)}/π_old Â] = mean_i J_iᵀ ∇_{θ_i} s_i  (J_i = I for FOMAML)
        surrogate, gradient = problem.surrogate_and_gradient()
        if not th.isfinite(surrogate) or not th.isfinite(flatten(gradient)).all():
            return None

        # KL Hessian H = mean_i J_iᵀ F_i J_i, then the TRPO step s = (H + λI)⁻¹ g, line search
        if self.hvp == "exact":
            hvp: Callable[[Params], Params] = problem.kl_hvp
        else:
            hvp = objective.kl_hvp_finite_difference(theta, inner, outer, old_dist)

        def evaluate(candidate: Params) -> tuple[float, float]:
            with th.no_grad():  # torch.func.grad still differentiates the inner loss inside no_grad
                adapted_c, _ = objective.adapt(candidate, inner)  # θ_i(θ') recomputed on the same inner episodes
                s, kl = objective.outer_surrogate_and_kl(adapted_c, outer, old_log_prob, old_dist)
            return float(s), float(kl)

        new_theta, stats = trpo_step(
            theta,
            gradient,
            hvp,
            evaluate,
            float(surrogate),
            self.target_kl,
            cg_max_steps=self.cg_max_steps,
            cg_damping=self.cg_damping,
            line_search_max_iter=self.line_search_max_iter,
            line_search_shrinking_factor=self.line_search_shrinking_factor,
        )
        if not all(th.isfinite(v).all() for v in new_theta.values()):
            return None
        self._load_meta_parameters(new_theta)
        return {
            "train/kl": stats.kl,
            "train/surrogate_improvement": stats.surrogate_improvement,
            "train/line_search_steps": stats.line_search_steps,
            "train/step_accepted": float(stats.accepted),
            "train/step_norm": stats.step_norm,
        }

    def learn(
        self: SelfMAML,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "MAML",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfMAML:
        if tb_log_name == "MAML" and self.first_order:
            tb_log_name = type(self).__name__ if type(self) is not MAML else "FOMAML"
        return super().learn(total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps, progress_bar)


class FOMAML(MAML):
    """
    First-order MAML (project paper: *First-order Meta-Learned Initialization for Faster Adaptation in Deep
    RL*): MAML with ``first_order=True``. The adapted parameters count as θ + stop_grad(θ_i − θ), so the
    meta-gradient is ∇L evaluated at θ_i and no second-order graph is built.

    Takes the same parameters as :class:`MAML` (``first_order`` is fixed to True).
    """

    def __init__(self, policy: str | type[MetaActorCriticPolicy], env: GymEnv | str | None, **kwargs: Any) -> None:
        if kwargs.pop("first_order", True) is not True:
            raise ValueError("FOMAML is first order; use MAML for first_order=False")
        super().__init__(policy, env, first_order=True, **kwargs)
