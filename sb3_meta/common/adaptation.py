"""The inner loop, shared by meta-training, ``adapt`` and evaluation: sample a batch of tasks, adapt, repeat.

For K tasks at once (one batch through the VecEnv and the policy), with α the step size of step s::

    D_i^(s) ~ π_{θ_i^(s)}                      one pass of K x E episodes (sub-env k*E + e holds task k)
    θ_i^(s+1) = θ_i^(s) − α ∇L_i(θ_i^(s))      one vmapped VPG step, L_i on the linear-baseline advantages
    D_i' ~ π_{θ_i^(n)}                         the post-adaptation pass (``sample_last``)

With ``reuse_episodes`` every step is computed on D_i^(0), the steps after the first on PPO's clipped surrogate of
the ratio π_{θ_i^(s)}/π_θ (as PPO's epochs on one rollout): one sampling pass before the steps instead of n;
passes at θ_i^(1..n-1) are then sampled only to measure the returns (``adapt``).

What differs between training, adaptation and evaluation enters as arguments (the VecEnv, the step sizes,
``on_step`` callbacks, a ``measure`` hook), never as replaced methods.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.vec_env import VecEnv

from sb3_meta.common.meta_gradient import AdamMoments, MetaObjective, stack_params
from sb3_meta.common.policies import Params
from sb3_meta.common.rollout import TaskBatch, collect_task_batch
from sb3_meta.common.utils import all_finite, stopwatch

__all__ = ["InnerLoop", "InnerLoopResult"]

#: ``on_step(new_obs, rewards, dones, infos)`` after every VecEnv step; False stops the pass.
OnStep = Callable[[np.ndarray, np.ndarray, np.ndarray, list[dict]], bool]
#: ``measure(params, per_task)`` before each sampling pass (e.g. a mean-action measurement on other episodes).
Measure = Callable[[Params, bool], None]


@dataclasses.dataclass
class InnerLoopResult:
    """What one run of the inner loop produced.

    :param batches: the passes sampled, in order: with θ_i^(0), θ_i^(1), ... (D^(0..n-1) when every step samples
        fresh episodes), then D' if the post-adaptation pass was sampled
    :param path: θ_i^(s) (stacked over tasks, detached) that each batch was sampled with, one per batch
    :param adapted: θ_i^(n), the adapted parameters (stacked over tasks)
    :param has_outer_batch: whether ``batches[-1]`` is D' (sampled with ``adapted``)
    :param times: seconds spent ``sampling`` (VecEnv and policy), on ``advantages`` (baseline and GAE) and in
        ``inner`` steps
    :param inner_batches: the batch each inner step was computed on (D^(s), or D^(0) for every step when the
        episodes are reused)
    :param inner_path: θ_i^(0..n-1), the parameters of each inner step (MAML differentiates the inner steps there)
    """

    batches: list[TaskBatch]
    path: list[Params]
    adapted: Params
    has_outer_batch: bool
    times: dict[str, float]
    inner_batches: list[TaskBatch]
    inner_path: list[Params]

    def returns_per_task(self) -> np.ndarray:
        """Mean episode return per task of every batch: before each step (and after the last): shape (K, passes)."""
        return np.stack([b.episode_returns().mean(dim=1).cpu().numpy() for b in self.batches], axis=1)


@dataclasses.dataclass
class InnerLoop:
    """How a meta-policy adapts to tasks: VPG steps on GAE advantages of a per-task linear feature baseline.

    :param objective: the per-task losses (policy, α, first/second order)
    :param horizon: episode horizon T of a sampling pass
    :param gamma: discount factor
    :param gae_lambda: GAE λ
    :param normalize_advantage: normalise advantages per task
    :param reuse_episodes: compute every inner step on the first pass's episodes (False: each step samples fresh ones)
    """

    objective: MetaObjective
    horizon: int
    gamma: float = 0.99
    gae_lambda: float = 1.0
    normalize_advantage: bool = True
    reuse_episodes: bool = False

    def sample(
        self,
        venv: VecEnv,
        tasks: Sequence[Any],
        params: Params,
        per_task: bool,
        n_episodes: int,
        on_step: OnStep | None,
        times: dict[str, float] | None = None,
    ) -> TaskBatch | None:
        """One pass: ``n_episodes`` episodes per task with ``params``, advantages computed; None if stopped.

        :param times: seconds are added to its ``sampling`` (VecEnv and policy) and ``advantages`` (linear baseline
            fit and GAE) entries
        """
        times = {} if times is None else times
        with stopwatch(times, "sampling"):
            batch = collect_task_batch(venv, self.objective.policy, tasks, n_episodes, params, per_task, self.horizon, on_step)
        if batch is not None:
            with stopwatch(times, "advantages"):
                batch.compute_advantages(self.gamma, self.gae_lambda, self.normalize_advantage)
        return batch

    def run(
        self,
        theta: Params,
        venv: VecEnv,
        tasks: Sequence[Any],
        n_steps: int,
        n_episodes: int,
        sample_last: bool = True,
        step_sizes: Sequence[float] | None = None,
        on_step: OnStep | None = None,
        measure: Measure | None = None,
        sample_every_step: bool = False,
    ) -> InnerLoopResult | None:
        """From θ, for all tasks at once: sample, θ_i ← θ_i − α∇L_i(θ_i), ``n_steps`` times; then sample D'.

        :param theta: the meta-parameters θ (shared by all tasks)
        :param venv: task VecEnv with ``len(tasks) * n_episodes`` sub-envs
        :param tasks: the K tasks
        :param n_steps: inner steps
        :param n_episodes: E, episodes per task and pass
        :param sample_last: also sample D' with the adapted parameters (MAML's outer batch, adaptation returns)
        :param step_sizes: α of each step (default: the objective's ``inner_lr`` for all)
        :param on_step: called after every VecEnv step; returning False stops the loop (None is returned)
        :param measure: called with ``(params, per_task)`` before each pass
        :param sample_every_step: with ``reuse_episodes``, still sample a pass at θ_i^(1..n-1) (to measure the return
            after each step; the steps do not use it)
        :return: the batches, the path, the adapted parameters and the times; None if ``on_step`` stopped it.
            Sampling stops early when an inner step gives non-finite parameters (they are returned as they are:
            the caller decides, e.g. training rejects the iteration)
        """
        params, per_task = theta, False
        batches: list[TaskBatch] = []
        path: list[Params] = []
        inner_batches: list[TaskBatch] = []
        inner_path: list[Params] = []
        moments = AdamMoments()  # the "adam" inner optimiser's state over this adaptation (unused by "sgd")
        reused_flat: dict[str, th.Tensor] | None = None
        times: dict[str, float] = {"sampling": 0.0, "advantages": 0.0, "inner": 0.0}
        has_outer_batch = False
        for step in range(n_steps + 1):
            stacked = {k: v.detach() for k, v in (params if per_task else stack_params(params, len(tasks))).items()}
            reused = self.reuse_episodes and step not in (0, n_steps)  # this step is computed on D^(0)
            if (step < n_steps and not reused) or (step == n_steps and sample_last) or (reused and sample_every_step):
                if measure is not None:
                    measure(params, per_task)
                batch = self.sample(venv, tasks, params, per_task, n_episodes, on_step, times)
                if batch is None:
                    return None
                batches.append(batch)
                path.append(stacked)
                has_outer_batch = step == n_steps
            if step == n_steps:
                break
            step_batch = inner_batches[0] if reused else batches[-1]
            inner_batches.append(step_batch)
            inner_path.append(stacked)
            with stopwatch(times, "inner"):
                alpha = None if step_sizes is None else step_sizes[step]
                if reused and reused_flat is None:  # D^(0) with log π_θ(a|s) of the policy that sampled it
                    reused_flat = dict(step_batch.flat())
                    reused_flat["behaviour_log_prob"] = self.objective.old_policy(inner_path[0], reused_flat)[0]
                params = self.objective.inner_step(
                    params,
                    reused_flat if reused else step_batch.flat(),  # type: ignore[arg-type]  # set above when reused
                    shared=not per_task,
                    create_graph=False,
                    step_size=alpha,
                    moments=moments,
                    reused=reused,
                )
            per_task = True
            if not all_finite(params):  # the adapted policies cannot act: stop sampling here
                break
        adapted = params if per_task else stack_params(params, len(tasks))
        return InnerLoopResult(batches, path, adapted, has_outer_batch, times, inner_batches, inner_path)

    def adapt(
        self,
        theta: Params,
        venv: VecEnv,
        tasks: Sequence[Any],
        n_steps: int,
        n_episodes: int,
        seed: int | None = None,
        step_sizes: Sequence[float] | None = None,
        measure: Measure | None = None,
    ) -> InnerLoopResult:
        """:meth:`run` for adaptation at test time: torch's global RNG is left as it was, ``seed`` seeds the
        episodes (``venv`` and torch), and non-finite adapted parameters raise an error.

        :param seed: seed of the adaptation episodes (actions and initial states); None: continue the streams
        :return: the inner loop's result, with the post-adaptation batch
        """
        device = self.objective.policy.device
        with th.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            if seed is not None:
                th.manual_seed(seed)
                venv.seed(seed)
            result = self.run(
                theta,
                venv,
                tasks,
                n_steps,
                n_episodes,
                sample_last=True,
                step_sizes=step_sizes,
                measure=measure,
                sample_every_step=True,  # a return after every step, also when the steps reuse D^(0)
            )
        assert result is not None  # no on_step: nothing can stop it
        if not all_finite(result.adapted):
            raise RuntimeError(
                "Adaptation gave non-finite parameters: check the env's rewards and observations for NaN/inf, "
                "or lower adapt_lr"
            )
        return result
