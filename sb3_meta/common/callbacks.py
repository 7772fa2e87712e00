"""SB3 callbacks for meta-training: post-adaptation evaluation on held-out tasks, and a stop after N iterations."""

from __future__ import annotations

import csv
import io
import math
import os
import warnings
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback, EventCallback

from sb3_meta.common.base_class import MetaAlgorithm
from sb3_meta.common.evaluation import AdaptationResult, EvaluationSpec, prepare_evaluation, run_evaluation
from sb3_meta.common.utils import atomic_write, check_int
from sb3_meta.envs.builders import AdaptationVecEnvs, as_task_env
from sb3_meta.envs.core import Task

__all__ = ["MetaEvalCallback", "StopTrainingOnIterations"]


class MetaEvalCallback(EventCallback):
    """Evaluate the policy after adaptation on a FIXED set of held-out tasks, every ``eval_freq`` meta-iterations.

    The tasks are drawn once, when training starts (:func:`~sb3_meta.common.evaluation.sample_eval_tasks` with
    ``seed``), and every evaluation uses the same ``seed`` for its episodes, so that successive evaluations
    differ only by the policy. Each evaluation runs :func:`~sb3_meta.common.evaluation.evaluate_adaptation`,
    logs ``meta_eval/return_step_k`` (mean return after ``k`` adaptation steps, ``k = 0..n_steps``) and
    ``meta_eval/stderr_step_k``, and saves ``best_model.zip`` when the mean return after the last step is the
    best so far. Every file is written atomically (a temporary file in the same folder, fsynced, then renamed
    over the old one): a kill while writing leaves the previous ``best_model.zip`` / ``evaluations.*`` intact.

    ``eval_freq`` counts meta-iterations (rollouts), not ``on_step`` calls (env steps) as SB3's ``EvalCallback``
    does: a meta-iteration makes a varying number of VecEnv steps, and the parameters only change between
    meta-iterations. ``eval_freq=5000`` as for ``EvalCallback`` would evaluate every 5000 meta-iterations: when
    ``learn(total_timesteps)`` cannot reach the first evaluation (at the nominal ``meta_batch_size x
    fast_batch_size x horizon x passes`` env steps per iteration; ``n_steps x n_envs`` per rollout for PPO/A2C),
    training starts with a warning that says so. The evaluation runs at the start of the iteration that follows
    every ``eval_freq``-th one (that is, after its update), and once more when training ends if the last
    iteration is due. With PPO, A2C or TRPO, the same holds per rollout.

    Evaluating leaves training untouched: ``num_timesteps``, the training env, the model's parameters and
    every global RNG are as they were, so training with this callback ends with the same parameters as without.

    As with ``EvalCallback``, ``callback_on_new_best`` runs when the post-adaptation return is the best so far and
    ``callback_after_eval`` after every evaluation; either stops training by returning False (at the next env
    step). They read ``parent.best_mean_reward`` and ``parent.last_mean_reward`` (the mean return after the last
    adaptation step), so SB3's ``StopTrainingOnRewardThreshold`` and ``StopTrainingOnNoModelImprovement`` work.

    :param eval_env: the task distribution to evaluate on (a gymnasium env or a registered id); not stepped itself
    :param eval_freq: evaluate every ``eval_freq`` meta-iterations (rollouts), not env steps
    :param n_tasks: number of held-out tasks
    :param n_steps: adaptation steps (default: the model's ``n_inner_steps``, 1 for models without one)
    :param n_episodes: episodes per task and step (default: the model's ``fast_batch_size``, else 20)
    :param best_model_save_path: folder to save ``best_model.zip`` in (None: do not save)
    :param log_path: folder for ``evaluations.npz`` (timesteps, iterations, per-task returns of every evaluation,
        tasks as JSON) and ``evaluations.csv`` (mean and standard error per step); None: do not write
    :param seed: seed of the held-out tasks and of the evaluation episodes
    :param deterministic: measure the returns with the mean action (see ``evaluate_adaptation``)
    :param adapt_lr: step size of the adaptation steps, or one per step (default: the model's ``inner_lr``)
    :param verbose: 0: silent, 1: print every evaluation
    :param callback_on_new_best: called when the mean post-adaptation return is the best so far
    :param callback_after_eval: called after every evaluation
    """

    def __init__(
        self,
        eval_env: gym.Env | str,
        eval_freq: int = 10,
        n_tasks: int = 40,
        n_steps: int | None = None,
        n_episodes: int | None = None,
        best_model_save_path: str | None = None,
        log_path: str | None = None,
        seed: int = 0,
        deterministic: bool = False,
        adapt_lr: float | Sequence[float] | None = None,
        verbose: int = 1,
        callback_on_new_best: BaseCallback | None = None,
        callback_after_eval: BaseCallback | None = None,
    ) -> None:
        super().__init__(callback_after_eval, verbose=verbose)
        self.callback_on_new_best = callback_on_new_best
        if callback_on_new_best is not None:
            callback_on_new_best.parent = self
        self.eval_env = as_task_env(eval_env, "MetaEvalCallback")
        self.eval_freq = check_int("eval_freq", eval_freq, 1)
        self.n_tasks = check_int("n_tasks", n_tasks, 1)
        self.n_steps = None if n_steps is None else check_int("n_steps", n_steps, 0)
        self.n_episodes = None if n_episodes is None else check_int("n_episodes", n_episodes, 1)
        self.seed = check_int("seed", seed, 0)
        self.deterministic = bool(deterministic)
        self.adapt_lr = adapt_lr
        self.best_model_save_path = best_model_save_path
        self.log_path = log_path
        self.tasks: list[Task] = []
        self.best_mean_return = -np.inf
        #: the mean return after the last adaptation step at the last evaluation (SB3's name, as EvalCallback)
        self.last_mean_reward = -np.inf
        self._continue_training = True
        self.last_result: AdaptationResult | None = None
        self.evaluations_timesteps: list[int] = []
        self.evaluations_iterations: list[int] = []
        self.evaluations_results: list[np.ndarray] = []
        self._n_rollouts = 0
        self._last_evaluated = 0
        self._spec: EvaluationSpec | None = None
        self._venvs = AdaptationVecEnvs()

    @property
    def best_mean_reward(self) -> float:
        """``best_mean_return`` under SB3's name (what ``StopTrainingOnRewardThreshold`` reads from its parent)."""
        return self.best_mean_return

    def _init_callback(self) -> None:
        if self.callback_on_new_best is not None:
            self.callback_on_new_best.init_callback(self.model)
        if self.n_steps is None:
            self.n_steps = int(getattr(self.model, "n_inner_steps", 1))
        if self.n_episodes is None:
            self.n_episodes = int(getattr(self.model, "fast_batch_size", 20))
        # every argument checked, and the held-out tasks drawn, once and before training
        self._spec = prepare_evaluation(
            self.model,
            self.eval_env,
            self.n_tasks,
            self.n_steps,
            self.n_episodes,
            None,
            self.seed,
            self.deterministic,
            self.adapt_lr,
        )
        self.tasks = self._spec.tasks
        for path in (self.best_model_save_path, self.log_path):
            if path is not None:
                os.makedirs(path, exist_ok=True)

    def _on_training_start(self) -> None:
        super()._on_training_start()
        self._warn_if_never_due(self.locals.get("total_timesteps"))

    def _warn_if_never_due(self, total_timesteps: int | None) -> None:
        """Warn when ``learn(total_timesteps)`` ends before the first evaluation (``eval_freq`` is in iterations)."""
        rollout = _nominal_rollout_steps(self.model)
        if total_timesteps is None or rollout is None:
            return
        steps, how = rollout
        n_iterations = math.ceil(max(int(total_timesteps) - self.model.num_timesteps, 0) / steps)
        first_due = 0 if self._due() else self.eval_freq - self._n_rollouts % self.eval_freq
        if first_due > n_iterations:
            warnings.warn(
                f"MetaEvalCallback(eval_freq={self.eval_freq}) counts meta-iterations (rollouts), not env steps as "
                f"SB3's EvalCallback: learn(total_timesteps={total_timesteps}) makes about {n_iterations} of them "
                f"({steps} env steps each: {how}), so no evaluation will run. Pass eval_freq <= {max(n_iterations, 1)} "
                f"(e.g. eval_freq={max(n_iterations // 10, 1)}), or train for more timesteps.",
                UserWarning,
                stacklevel=2,
            )

    def _due(self) -> bool:
        return self._n_rollouts > self._last_evaluated and self._n_rollouts % self.eval_freq == 0

    def _on_rollout_start(self) -> None:
        if self._due():
            self._evaluate()

    def _on_rollout_end(self) -> None:
        self._n_rollouts += 1

    def _on_step(self) -> bool:
        return self._continue_training  # the evaluation runs between iterations: its verdict stops the next step

    def update_child_locals(self, locals_: dict[str, Any]) -> None:
        """Give the child callbacks the training locals (as SB3's EvalCallback)."""
        super().update_child_locals(locals_)
        if self.callback_on_new_best is not None:
            self.callback_on_new_best.update_locals(locals_)

    def _on_training_end(self) -> None:
        if self._due():
            self._evaluate()
        self._venvs.close()

    def _evaluate(self) -> None:
        assert self._spec is not None
        self._last_evaluated = self._n_rollouts
        result = run_evaluation(self.model, self._spec, self._venvs)
        self.last_result = result
        self.evaluations_timesteps.append(self.num_timesteps)
        self.evaluations_iterations.append(self._n_rollouts)
        self.evaluations_results.append(result.returns)
        mean, stderr = result.mean, result.stderr
        for k in range(result.n_steps + 1):
            self.logger.record(f"meta_eval/return_step_{k}", float(mean[k]))
            self.logger.record(f"meta_eval/stderr_step_{k}", float(stderr[k]))
        if self.verbose >= 1:
            steps = ", ".join(f"{k}: {mean[k]:.2f} ± {stderr[k]:.2f}" for k in range(result.n_steps + 1))
            print(f"Meta-eval num_timesteps={self.num_timesteps}, iteration={self._n_rollouts}, return after k steps: {steps}")
        if self.log_path is not None:
            self._write_logs()
        self.last_mean_reward = float(mean[-1])
        continue_training = True
        if mean[-1] > self.best_mean_return:
            self.best_mean_return = float(mean[-1])
            if self.verbose >= 1:
                print(f"New best mean post-adaptation return: {self.best_mean_return:.2f}")
            if self.best_model_save_path is not None:
                # atomic whatever the model (an SB3 model's own save truncates the file first)
                atomic_write(os.path.join(self.best_model_save_path, "best_model.zip"), self.model.save)
            if self.callback_on_new_best is not None:
                continue_training = self.callback_on_new_best.on_step()
        if self.callback is not None:  # callback_after_eval
            continue_training = self._on_event() and continue_training
        self._continue_training = self._continue_training and bool(continue_training)
        self.logger.record("meta_eval/best_return", self.best_mean_return)
        self.logger.dump(self.num_timesteps)

    def _write_logs(self) -> None:
        assert self.log_path is not None
        arrays: dict[str, Any] = dict(
            timesteps=np.asarray(self.evaluations_timesteps),
            iterations=np.asarray(self.evaluations_iterations),
            results=np.stack(self.evaluations_results),
            tasks=np.asarray([task.to_json() for task in self.tasks]),
        )
        n_cols = self.evaluations_results[0].shape[1]
        header = ["timesteps", "iteration"]
        header += [f"return_step_{k}" for k in range(n_cols)] + [f"stderr_step_{k}" for k in range(n_cols)]
        table = io.StringIO(newline="")
        writer = csv.writer(table)
        writer.writerow(header)
        for timesteps, iteration, returns in zip(
            self.evaluations_timesteps, self.evaluations_iterations, self.evaluations_results
        ):
            result = AdaptationResult(returns, self.tasks)
            writer.writerow([timesteps, iteration, *result.mean.tolist(), *result.stderr.tolist()])
        # each file replaced whole: a reader (or a kill) never sees half of one
        atomic_write(os.path.join(self.log_path, "evaluations.npz"), lambda f: np.savez(f, **arrays))
        atomic_write(os.path.join(self.log_path, "evaluations.csv"), lambda f: f.write(table.getvalue().encode()))


class StopTrainingOnIterations(BaseCallback):
    """Stop training after ``max_iterations`` meta-iterations (rollouts), whatever the timestep budget.

    ``learn`` counts env steps; budgets in the meta-RL literature count meta-iterations, and early terminations
    make the steps per iteration vary. Training stops at the first ``on_step`` of iteration
    ``max_iterations + 1``, which is discarded (its few sampled steps count in ``num_timesteps``);
    :attr:`timesteps_at_stop` holds ``num_timesteps`` at the end of the last full iteration's sampling.

    :param max_iterations: meta-iterations to run
    :param verbose: 0: silent, 1: say when training stops
    """

    def __init__(self, max_iterations: int, verbose: int = 0) -> None:
        super().__init__(verbose=verbose)
        self.max_iterations = check_int("max_iterations", max_iterations, 1)
        self.n_iterations = 0
        self.timesteps_at_stop: int | None = None

    def _on_rollout_end(self) -> None:
        self.n_iterations += 1
        if self.n_iterations == self.max_iterations:
            self.timesteps_at_stop = self.num_timesteps

    def _on_step(self) -> bool:
        if self.n_iterations >= self.max_iterations:
            if self.verbose >= 1:
                print(f"Stopping training after {self.n_iterations} iterations")
            return False
        return True

    def _on_training_start(self) -> None:
        self.n_iterations = 0
        self.timesteps_at_stop = None


def _nominal_rollout_steps(model: object) -> tuple[int, str] | None:
    """(env steps of one rollout, how they add up) for the models whose rollouts have a fixed nominal size: a
    meta-iteration of a :class:`~sb3_meta.common.base_class.MetaAlgorithm` (at most: episodes may end before the
    horizon), an SB3 on-policy rollout; None for others (e.g. off-policy rollouts counted in episodes)."""
    if isinstance(model, MetaAlgorithm):
        try:
            horizon = model.inner_loop().horizon
        except ValueError:  # no horizon known: the first iteration raises a clear error anyway
            return None
        passes = model.sampling_passes
        steps = model.meta_batch_size * model.fast_batch_size * horizon * passes
        how = (
            f"meta_batch_size {model.meta_batch_size} x fast_batch_size {model.fast_batch_size} x horizon {horizon} "
            f"x {passes} sampling passes"
        )
        return steps, how
    n_steps, n_envs = getattr(model, "n_steps", None), getattr(model, "n_envs", None)
    if isinstance(n_steps, int) and isinstance(n_envs, int) and n_steps > 0 and n_envs > 0:
        return n_steps * n_envs, f"n_steps {n_steps} x n_envs {n_envs}"
    return None
