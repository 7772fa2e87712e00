"""Few-shot evaluation: returns before and after each test-time VPG step, for meta-learners and SB3 baselines.

:func:`evaluate_adaptation` measures, on held-out tasks, the mean return of a policy before adaptation and after
each of ``n_steps`` vanilla-policy-gradient steps (the meta-learners' inner step, each on fresh episodes), as in
Fig. 5 of the MAML paper. It takes the sb3_meta meta-learners (MAML, FOMAML, Reptile) and any SB3 on-policy model
whose policy is a Gaussian or categorical ``ActorCriticPolicy`` (PPO, A2C, sb3-contrib TRPO): such a model's
policy is copied, parameter for parameter, into a meta-policy of the same architecture, so that the pretrained
and random baselines adapt with exactly the meta-learners' step (:class:`~sb3_meta.common.adaptation.InnerLoop`).
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm

from sb3_meta.common.adaptation import InnerLoop
from sb3_meta.common.meta_gradient import MetaObjective
from sb3_meta.common.normalization import model_normalization, normalized_vec_env
from sb3_meta.common.policies import MetaActorCriticPolicy, Params
from sb3_meta.common.rollout import collect_task_batch
from sb3_meta.common.sb3_policies import DEFAULT_ADAPT_LR, check_sb3_policy, meta_policy_from_sb3
from sb3_meta.common.utils import check_int, check_positive_float, check_step_sizes
from sb3_meta.envs.builders import AdaptationVecEnvs, as_task_env, env_horizon, make_adaptation_vec_env
from sb3_meta.envs.core import Task
from sb3_meta.envs.vec_env import get_task_env
from sb3_meta.envs.wrappers import OracleVecEnv, check_not_mixture

__all__ = [
    "DEFAULT_ADAPT_LR",
    "AdaptationResult",
    "EvaluationSpec",
    "OracleVecEnv",
    "evaluate_adaptation",
    "make_adaptation_vec_env",
    "prepare_evaluation",
    "run_evaluation",
    "sample_eval_tasks",
]
#: Second word of the seed of the held-out task RNG, so that evaluation tasks drawn with seed ``s`` differ from the
#: tasks a model trained with ``seed=s`` meets first (its task RNG is seeded from ``[s, 0x7A5C]``).
_EVAL_TASK_STREAM = 0xE7A1


# --- results ----------------------------------------------------------------------------------------------------
def _step_sizes_to_cell(adapt_lr: float | list[float] | None) -> float | str | None:
    """A table cell: the step size, or the per-step sizes joined by ';' (CSV-safe)."""
    if adapt_lr is None or np.ndim(adapt_lr) == 0:
        return adapt_lr  # type: ignore[return-value]
    return ";".join(repr(float(a)) for a in adapt_lr)  # type: ignore[union-attr]


def _step_sizes_from_cell(cell: Any) -> float | list[float] | None:
    if cell is None or cell == "":
        return None
    if isinstance(cell, str) and ";" in cell:
        return [float(a) for a in cell.split(";")]
    if isinstance(cell, (list, tuple)):
        return [float(a) for a in cell]
    return float(cell)


@dataclasses.dataclass
class AdaptationResult:
    """Per-task mean returns before adaptation and after each adaptation step.

    :param returns: mean episode return per task (rows) and number of adaptation steps (columns ``0..n_steps``)
    :param tasks: the tasks, in the order of the rows
    :param n_episodes: episodes per task and step
    :param adapt_lr: step size of the VPG steps (one number, or one per step)
    :param deterministic: whether the returns were measured with the mean action
    """

    returns: np.ndarray
    tasks: list[Task]
    n_episodes: int | None = None
    adapt_lr: float | list[float] | None = None
    deterministic: bool = False

    #: Columns of :meth:`to_rows` / :meth:`to_csv` (before any extra columns).
    COLUMNS = ("task_index", "task", "grad_steps", "return", "n_episodes", "adapt_lr", "deterministic")

    def __post_init__(self) -> None:
        self.returns = np.asarray(self.returns, dtype=np.float64)
        if self.returns.ndim != 2 or self.returns.shape[0] < 1 or self.returns.shape[1] < 1:
            raise ValueError(f"returns must have shape (n_tasks, n_steps + 1), got {self.returns.shape}")
        self.tasks = list(self.tasks)
        if len(self.tasks) != self.returns.shape[0]:
            raise ValueError(f"{len(self.tasks)} tasks for {self.returns.shape[0]} rows of returns")

    @property
    def n_tasks(self) -> int:
        """Number of tasks."""
        return int(self.returns.shape[0])

    @property
    def n_steps(self) -> int:
        """Number of adaptation steps (the returns have ``n_steps + 1`` columns)."""
        return int(self.returns.shape[1] - 1)

    @property
    def mean(self) -> np.ndarray:
        """Mean over tasks of the per-task returns, per number of steps: shape ``(n_steps + 1,)``."""
        return self.returns.mean(axis=0)

    @property
    def std(self) -> np.ndarray:
        """Standard deviation across tasks (``ddof=1``; NaN for a single task), per number of steps."""
        if self.n_tasks < 2:
            return np.full(self.n_steps + 1, np.nan)
        return self.returns.std(axis=0, ddof=1)

    @property
    def stderr(self) -> np.ndarray:
        """Standard error of :attr:`mean` over tasks, ``std / sqrt(n_tasks)`` (NaN for a single task)."""
        return self.std / np.sqrt(self.n_tasks)

    # --- tables ---------------------------------------------------------------------------------------------
    def to_rows(self, **extra: Any) -> list[dict[str, Any]]:
        """One row per task and number of steps (long format); ``extra`` columns (e.g. ``method="maml"``) come first.

        :return: dicts with the keys of ``extra`` then :attr:`COLUMNS`; ``task`` is the task's JSON form
        """
        rows = []
        for i, task in enumerate(self.tasks):
            task_json = task.to_json()
            for k in range(self.n_steps + 1):
                rows.append(
                    {
                        **extra,
                        "task_index": i,
                        "task": task_json,
                        "grad_steps": k,
                        "return": float(self.returns[i, k]),
                        "n_episodes": self.n_episodes,
                        "adapt_lr": _step_sizes_to_cell(self.adapt_lr),
                        "deterministic": self.deterministic,
                    }
                )
        return rows

    def summary_rows(self, **extra: Any) -> list[dict[str, Any]]:
        """One row per number of steps with the columns of the MAML reference table.

        :return: dicts with the keys of ``extra`` then ``grad_steps, n_tasks, mean_return, std_across_tasks, stderr``
        """
        mean, std, stderr = self.mean, self.std, self.stderr
        return [
            {
                **extra,
                "grad_steps": k,
                "n_tasks": self.n_tasks,
                "mean_return": float(mean[k]),
                "std_across_tasks": float(std[k]),
                "stderr": float(stderr[k]),
            }
            for k in range(self.n_steps + 1)
        ]

    def to_dataframe(self, **extra: Any) -> Any:
        """:meth:`to_rows` as a ``pandas.DataFrame`` (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as e:  # pragma: no cover - pandas is installed with the "extra" extras
            raise ImportError("to_dataframe needs pandas: pip install pandas (or use to_rows / to_csv)") from e
        return pd.DataFrame(self.to_rows(**extra))

    def to_csv(self, path: str | os.PathLike, **extra: Any) -> None:
        """Write :meth:`to_rows` to a CSV file (read it back with :meth:`from_csv`)."""
        rows = self.to_rows(**extra)
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    @classmethod
    def from_rows(cls, rows: Sequence[dict[str, Any]]) -> AdaptationResult:
        """Inverse of :meth:`to_rows` (extra columns are ignored; values may be strings, as read from a CSV)."""
        rows = list(rows)
        if not rows:
            raise ValueError("from_rows: no rows")
        missing = [c for c in ("task_index", "task", "grad_steps", "return") if c not in rows[0]]
        if missing:
            raise ValueError(f"from_rows: missing columns {missing}")
        n_tasks = max(int(r["task_index"]) for r in rows) + 1
        n_cols = max(int(r["grad_steps"]) for r in rows) + 1
        returns = np.full((n_tasks, n_cols), np.nan)
        tasks: list[Task | None] = [None] * n_tasks
        for r in rows:
            i, k = int(r["task_index"]), int(r["grad_steps"])
            if not np.isnan(returns[i, k]):
                raise ValueError(f"from_rows: two rows for task {i} and {k} steps (several runs mixed?)")
            returns[i, k] = float(r["return"])
            tasks[i] = Task.from_json(r["task"]) if isinstance(r["task"], str) else r["task"]
        if np.isnan(returns).any():
            raise ValueError("from_rows: some (task, steps) pairs have no row")
        first = rows[0]
        n_episodes = first.get("n_episodes")
        adapt_lr = first.get("adapt_lr")
        deterministic = first.get("deterministic", False)
        return cls(
            returns=returns,
            tasks=tasks,  # type: ignore[arg-type]
            n_episodes=None if n_episodes in (None, "") else int(n_episodes),
            adapt_lr=_step_sizes_from_cell(adapt_lr),
            deterministic=deterministic if isinstance(deterministic, bool) else str(deterministic) == "True",
        )

    @classmethod
    def from_csv(cls, path: str | os.PathLike) -> AdaptationResult:
        """Read a CSV written by :meth:`to_csv`."""
        with open(path, newline="") as f:
            return cls.from_rows(list(csv.DictReader(f)))

    def __str__(self) -> str:
        mean, stderr = self.mean, self.stderr
        lines = [f"{'grad steps':>10s}  {'mean return':>12s}  {'stderr':>8s}   ({self.n_tasks} tasks)"]
        lines += [f"{k:>10d}  {mean[k]:>12.2f}  {stderr[k]:>8.2f}" for k in range(self.n_steps + 1)]
        return "\n".join(lines)


def sample_eval_tasks(env: Any, n_tasks: int, seed: int | None = None) -> list[Task]:
    """Draw held-out tasks from ``env``'s task distribution.

    With ``seed``, the tasks come from a fresh task RNG seeded from ``(seed, evaluation stream)``: the env is not
    touched, the same seed gives the same tasks, and they differ from the tasks a model trained with
    ``seed=seed`` draws first. Without it, they come from the env's own task RNG (which advances).

    :param env: a task-distribution env (possibly wrapped) or a registered id
    :param n_tasks: number of tasks
    :param seed: seed of the task draw
    :return: the tasks
    """
    n_tasks = check_int("n_tasks", n_tasks, 1)
    task_env = get_task_env(as_task_env(env, "evaluate_adaptation"))
    if seed is None:
        return list(task_env.sample_tasks(n_tasks))
    seed = check_int("seed", seed, 0)
    rng = np.random.default_rng([seed, _EVAL_TASK_STREAM])
    if callable(getattr(task_env, "_sample_task", None)):  # TaskEnv: draw with our own RNG, env untouched
        return [task_env._sample_task(rng) for _ in range(n_tasks)]
    sampler = copy.deepcopy(task_env)  # duck-typed distribution: reseed a copy
    sampler.reset(seed=seed)
    return list(sampler.sample_tasks(n_tasks))


class _MeanActionPolicy:
    """The meta-policy with every sampled action replaced by the mean action (the mode for categorical)."""

    def __init__(self, policy: MetaActorCriticPolicy) -> None:
        self._policy = policy

    def __getattr__(self, name: str) -> Any:
        return getattr(self._policy, name)

    def sample(self, dist: Any, deterministic: bool = False) -> th.Tensor:
        return self._policy.sample(dist, deterministic=True)


# --- evaluation ---------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class EvaluationSpec:
    """Validated arguments of one evaluation (see :func:`prepare_evaluation`)."""

    env: gym.Env
    tasks: list[Task]
    n_steps: int
    n_episodes: int
    seed: int | None
    deterministic: bool
    adapt_lr: float | list[float]
    horizon: int | None


def _is_meta_learner(model: Any) -> bool:
    """A model with a meta-policy and its own inner loop (the sb3_meta algorithms)."""
    return isinstance(getattr(model, "policy", None), MetaActorCriticPolicy) and callable(getattr(model, "inner_loop", None))


def _check_model(model: Any, env: gym.Env) -> None:
    if not isinstance(model, BaseAlgorithm):
        raise ValueError(f"Expected an SB3 model (PPO, A2C, TRPO) or an sb3_meta meta-learner, got {type(model).__name__}")
    if not _is_meta_learner(model):
        check_sb3_policy(model)
    for what, mine, theirs in (
        ("observation", model.observation_space, env.observation_space),
        ("action", model.action_space, env.action_space),
    ):
        if mine != theirs:
            raise ValueError(f"The model's {what} space {mine} does not match the env's {theirs}")


def prepare_evaluation(
    model: Any,
    env: gym.Env | str,
    n_tasks: int,
    n_steps: int,
    n_episodes: int,
    tasks: Sequence[Task] | None = None,
    seed: int | None = None,
    deterministic: bool = False,
    adapt_lr: float | Sequence[float] | None = None,
) -> EvaluationSpec:
    """Check every argument of :func:`evaluate_adaptation` (ValueError before any work) and draw the tasks."""
    n_steps = check_int("n_steps", n_steps, 0)
    n_episodes = check_int("n_episodes", n_episodes, 1)
    if tasks is None:
        n_tasks = check_int("n_tasks", n_tasks, 1)
    if seed is not None:
        seed = check_int("seed", seed, 0)
    # one number (kept as one in the results) or one per step, checked as adapt_tasks checks them
    default = float(getattr(model, "inner_lr", DEFAULT_ADAPT_LR))
    step_sizes = check_step_sizes(adapt_lr, n_steps, default)
    step_size: float | list[float]
    if adapt_lr is None:
        step_size = default
    elif np.ndim(adapt_lr) == 0:
        step_size = check_positive_float("adapt_lr", adapt_lr)
    else:
        step_size = step_sizes
    env = as_task_env(env, "evaluate_adaptation")
    check_not_mixture(env)
    _check_model(model, env)
    horizon = env_horizon(env)
    if not _is_meta_learner(model) and horizon is None:
        raise ValueError("Cannot tell the episode horizon of env: give the distribution a max_episode_steps")
    if tasks is None:
        tasks = sample_eval_tasks(env, n_tasks, seed)
    else:
        if isinstance(tasks, Task) or not isinstance(tasks, Sequence) or len(tasks) < 1:
            raise ValueError(f"tasks must be a non-empty sequence of tasks, got {tasks!r}")
        tasks = list(tasks)
        validate = getattr(get_task_env(env), "validate_task", None)
        if callable(validate):
            for task in tasks:
                validate(task)
    return EvaluationSpec(env, list(tasks), n_steps, n_episodes, seed, bool(deterministic), step_size, horizon)


def _inner_loop_of(model: Any, horizon: int | None) -> tuple[InnerLoop, Params]:
    """The inner loop that adapts ``model`` and its θ: the meta-learner's own, or the meta-learners' defaults
    (γ = 0.99, λ = 1, normalised advantages, α = 0.1) around a meta-policy copy of an SB3 model's policy."""
    if _is_meta_learner(model):
        # the horizon of the env evaluated on, unless the model fixes its own
        return model.inner_loop(horizon=horizon), model.meta_parameters()
    assert horizon is not None  # prepare_evaluation refused an SB3 model without one
    policy = meta_policy_from_sb3(model)
    params = {k: v.detach().clone() for k, v in policy.actor_parameters().items()}
    return InnerLoop(MetaObjective(policy, DEFAULT_ADAPT_LR, first_order=True), horizon), params


def run_evaluation(model: BaseAlgorithm, spec: EvaluationSpec, venvs: AdaptationVecEnvs) -> AdaptationResult:
    """Adapt to ``spec.tasks`` with the model's inner loop on the VecEnvs of ``venvs``, and collect the returns.

    The model itself is not touched (its parameters are read, its RNG streams and envs are not used): callbacks
    evaluate during training without changing it.
    """
    loop, theta = _inner_loop_of(model, spec.horizon)
    n_envs = len(spec.tasks) * spec.n_episodes
    # the observations (and rewards) as the model was trained on them, with its VecNormalize statistics frozen
    normalization = model_normalization(model)
    venv = normalized_vec_env(venvs.get(spec.env, n_envs, "adapt"), normalization)
    mean_action_returns: list[np.ndarray] = []
    measure = None
    if spec.deterministic:
        measure_venv = normalized_vec_env(venvs.get(spec.env, n_envs, "measure"), normalization)
        if spec.seed is not None:
            measure_venv.seed(spec.seed)
        mean_policy = _MeanActionPolicy(loop.objective.policy)

        def measure(params: Params, per_task: bool) -> None:
            # the current parameters with the mean action, on separate episodes (no torch RNG draws, so the sampled
            # adaptation episodes are those of deterministic=False)
            batch = collect_task_batch(measure_venv, mean_policy, spec.tasks, spec.n_episodes, params, per_task, loop.horizon)  # type: ignore[arg-type]
            assert batch is not None
            mean_action_returns.append(batch.episode_returns().mean(dim=1).cpu().numpy())

    step_sizes = check_step_sizes(spec.adapt_lr, spec.n_steps, DEFAULT_ADAPT_LR)
    result = loop.adapt(theta, venv, spec.tasks, spec.n_steps, spec.n_episodes, spec.seed, step_sizes, measure)
    returns = np.stack(mean_action_returns, axis=1) if spec.deterministic else result.returns_per_task()
    return AdaptationResult(
        returns=returns,
        tasks=spec.tasks,
        n_episodes=spec.n_episodes,
        adapt_lr=spec.adapt_lr,
        deterministic=spec.deterministic,
    )


def evaluate_adaptation(
    model: BaseAlgorithm,
    env: gym.Env | str,
    n_tasks: int = 40,
    n_steps: int = 3,
    n_episodes: int = 20,
    tasks: Sequence[Task] | None = None,
    seed: int | None = None,
    deterministic: bool = False,
    adapt_lr: float | Sequence[float] | None = None,
) -> AdaptationResult:
    """Mean return per task before adaptation and after each of ``1..n_steps`` VPG steps (fresh episodes each).

    All tasks are adapted at once (one batched VecEnv of ``len(tasks) * n_episodes`` sub-envs) by
    :class:`~sb3_meta.common.adaptation.InnerLoop` (the model's own for a meta-learner); SB3 models are adapted
    as a meta-policy copy of their policy (:func:`~sb3_meta.common.sb3_policies.meta_policy_from_sb3`). The model
    and every global RNG are left as they were; the same ``seed`` gives the same result. ``env`` is left as it was
    too, except that with neither ``seed`` nor ``tasks`` the tasks are drawn with its own task RNG, which advances
    (so that unseeded calls draw new tasks; see :func:`sample_eval_tasks`).

    :param model: an sb3_meta meta-learner, or an SB3 PPO / A2C / sb3-contrib TRPO model with a Gaussian or
        categorical ``ActorCriticPolicy``
    :param env: the task distribution to evaluate on (a gymnasium env, possibly wrapped, e.g. in
        :class:`~sb3_meta.envs.OracleObservation` for an oracle; or a registered id); its spaces must be the model's
    :param n_tasks: number of tasks drawn when ``tasks`` is None
    :param n_steps: adaptation steps (0: the policy as it is)
    :param n_episodes: episodes per task and step (for the measurement and for each step's gradient)
    :param tasks: the tasks to evaluate on (default: :func:`sample_eval_tasks` ``(env, n_tasks, seed)``)
    :param seed: seed of the task draw and of the episodes (actions and initial states)
    :param deterministic: measure the returns with the mean action, on separate episodes; the adaptation steps
        still use sampled episodes, so the adapted parameters are those of ``deterministic=False``
    :param adapt_lr: step size of every step (default: the model's ``inner_lr``; 0.1 for models without one), or
        one step size per step (e.g. ``[0.1, 0.05, 0.05]``: the original MAML test script took later steps at half
        the first one's learning rate)
    :return: the per-task returns, shape ``(len(tasks), n_steps + 1)``, and their mean / standard error
    """
    spec = prepare_evaluation(model, env, n_tasks, n_steps, n_episodes, tasks, seed, deterministic, adapt_lr)
    venvs = AdaptationVecEnvs()
    try:
        return run_evaluation(model, spec, venvs)
    finally:
        venvs.close()
