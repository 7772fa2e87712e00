"""Reptile (batched) for RL: move the initialisation towards the task-adapted parameters."""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import torch as th
from stable_baselines3.common.type_aliases import GymEnv

from sb3_meta.common.adaptation import InnerLoopResult
from sb3_meta.common.base_class import MetaAlgorithm
from sb3_meta.common.meta_gradient import INNER_OPTIMIZERS
from sb3_meta.common.policies import MetaActorCriticPolicy
from sb3_meta.common.utils import check_positive_float
from sb3_meta.reptile.policies import MlpPolicy

SelfReptile = TypeVar("SelfReptile", bound="Reptile")


class Reptile(MetaAlgorithm):
    """
    Reptile (Nichol, Achiam & Schulman, 2018), batched version (Algorithm 3 of the project paper), for RL.

    Paper: https://arxiv.org/abs/1803.02999

    Per task, ``n_inner_steps`` VPG steps on fresh episodes give θ_i; then θ ← θ + ε · mean_i(θ_i − θ). The original
    Reptile's variants are options: Adam with β1 = 0 as the inner optimiser (``inner_optimizer="adam"``) and every
    inner step on the same episodes (``reuse_inner_episodes=True``, one sampling pass per iteration).
    With one inner step Reptile is plain policy gradient on the task mixture, hence ``n_inner_steps=3``. The inner
    step is larger than MAML's 0.1: Reptile's outer update is the mean of its inner steps, so its size sets how far
    the initialisation moves (PointMass sweep, ``reproduce.py reptile-sweep``: after one test-time step −59 with
    0.1, −30 with 0.3, −16 with 0.5, at equal env steps; docs/results.md). Adapt it the way it was meta-trained:
    ``n_inner_steps`` steps of ``inner_lr`` (``adapt`` and ``evaluate_adaptation`` use ``inner_lr`` by default).

    :param policy: The policy model to use (MlpPolicy)
    :param env: a task distribution, a registered id, a task VecEnv or an SB3 VecEnv of task distributions
        (``make_vec_env``), with ``meta_batch_size * fast_batch_size`` sub-envs
    :param meta_batch_size: tasks per meta-iteration (40)
    :param fast_batch_size: episodes per task and sampling pass (20)
    :param inner_lr: α, inner VPG learning rate (0.3, from the PointMass sweep)
    :param n_inner_steps: inner steps per task, each on fresh episodes (3)
    :param inner_optimizer: ``"sgd"``, the VPG step θ_i − α∇L_i (default), or ``"adam"``: Adam with β1 = 0 and
        β2 = 0.999 (the original Reptile code's inner optimiser), step size ``inner_lr``, its second moments started
        afresh for each adaptation (training, ``adapt`` and evaluation alike); its first step is about
        ``inner_lr`` per parameter in the gradient's sign, so it wants a far smaller ``inner_lr`` than ``"sgd"``
    :param reuse_inner_episodes: compute every inner step on the episodes of the first pass (original Reptile: k steps
        on the same data), the steps after the first on PPO's clipped surrogate (the policy has moved away from the
        one that sampled them), one sampling pass per iteration instead of ``n_inner_steps``; ``adapt`` and
        evaluation adapt the same way (the passes they sample after steps 1..k−1 only measure the return)
    :param reuse_clip_range: c of that clipped surrogate (0.2, PPO's); None: the unclipped probability ratio
    :param outer_lr: ε, the outer step size (1.0: the mean adapted parameters)
    :param anneal_outer_lr: anneal ε linearly to 0 over ``total_timesteps``
    :param gamma: discount factor (0.99)
    :param gae_lambda: GAE λ (1.0)
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
    _needs_post_adaptation_batch: ClassVar[bool] = False

    def __init__(
        self,
        policy: str | type[MetaActorCriticPolicy],
        env: GymEnv | str | None,
        meta_batch_size: int = 40,
        fast_batch_size: int = 20,
        inner_lr: float = 0.3,
        n_inner_steps: int = 3,
        inner_optimizer: str = "sgd",
        reuse_inner_episodes: bool = False,
        reuse_clip_range: float | None = 0.2,
        outer_lr: float = 1.0,
        anneal_outer_lr: bool = False,
        gamma: float = 0.99,
        gae_lambda: float = 1.0,
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
        if inner_optimizer not in INNER_OPTIMIZERS:
            raise ValueError(f"inner_optimizer must be one of {INNER_OPTIMIZERS}, got {inner_optimizer!r}")
        self.inner_optimizer = inner_optimizer
        self.reuse_inner_episodes = bool(reuse_inner_episodes)
        if reuse_clip_range is not None:
            reuse_clip_range = check_positive_float("reuse_clip_range", reuse_clip_range)
        self.reuse_clip_range = reuse_clip_range
        self.outer_lr = check_positive_float("outer_lr", outer_lr)
        self.anneal_outer_lr = bool(anneal_outer_lr)
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

    def current_outer_lr(self) -> float:
        return self.outer_lr * (self._current_progress_remaining if self.anneal_outer_lr else 1.0)

    def _outer_step(self, result: InnerLoopResult) -> dict[str, float] | None:
        theta, adapted = self.meta_parameters(), result.adapted
        epsilon = self.current_outer_lr()
        # θ ← θ + ε · mean_i(θ_i − θ)
        update = {k: (adapted[k] - theta[k].unsqueeze(0)).mean(dim=0) for k in theta}
        if not all(th.isfinite(u).all() for u in update.values()):
            return None
        self._load_meta_parameters({k: theta[k] + epsilon * update[k] for k in theta})
        norm = float(th.sqrt(sum((u**2).sum() for u in update.values())))  # type: ignore[arg-type]  # sum of tensors: a Tensor
        # how far each task moved, ‖θ_i − θ‖, against how far their mean moved: coherence 1 means every task moved the
        # same way (the update is multi-task policy gradient), 1/√n that the task-specific parts cancel
        per_task = th.sqrt(sum(((adapted[k] - theta[k].unsqueeze(0)) ** 2).flatten(1).sum(1) for k in theta))  # type: ignore[arg-type]
        displacement = float(per_task.mean())
        coherence = norm / displacement if displacement > 0 else float("nan")
        return {
            "train/outer_lr": epsilon,
            "train/update_norm": norm,
            "train/task_displacement_norm": displacement,
            "train/update_coherence": coherence,
        }
