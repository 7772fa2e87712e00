"""Few-shot evaluation: returns before and after each test-time VPG step, for meta-learners and SB3 baselines.

:func:`evaluate_adaptation` measures, on held-out tasks, the mean return of a policy before adaptation and after
each of ``n_steps`` vanilla-policy-gradient steps (the meta-learners' inner step, each on fresh episodes), as in
Fig. 5 of the MAML paper. It takes the sb3_meta meta-learners (MAML, FOMAML, Reptile) and any SB3 on-policy model
whose policy is a Gaussian or categorical ``ActorCriticPolicy`` (PPO, A2C, sb3-contrib TRPO): such a model's
policy is copied, parameter for parameter, into a meta-policy of the same architecture, so that the pretrained
and random baselines adapt with exactly the meta-learners' step (:meth:`MetaAlgorithm.adapt_tasks`).
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
from stable_baselines3.common.distributions import CategoricalDistribution, DiagGaussianDistribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from sb3_meta.common.base_class import MetaAlgorithm, _check_positive_float, _check_step_sizes
from sb3_meta.common.policies import MetaActorCriticPolicy
from sb3_meta.common.rollout import collect_task_batch
from sb3_meta.envs.core import Task
from sb3_meta.envs.vec_env import get_task_env, is_task_vec_env, make_task_vec_env
from sb3_meta.envs.wrappers import OracleObservation, TaskMixture
from sb3_meta.maml.maml import FOMAML

__all__ = [
    "DEFAULT_ADAPT_LR",
    "AdaptationResult",
    "OracleVecEnv",
    "as_meta_model",
    "evaluate_adaptation",
    "make_adaptation_vec_env",
    "sample_eval_tasks",
]

#: Step size of the test-time VPG step for models without an ``inner_lr`` (PPO, A2C, TRPO): the meta-learners' default.
DEFAULT_ADAPT_LR = 0.1
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


# --- batched oracle observations --------------------------------------------------------------------------------
class OracleVecEnv(VecEnvWrapper):
    """Append each sub-env's task (``Task.as_array()``) to its observation: :class:`OracleObservation` for a VecEnv.

    Wrapping a batched task VecEnv keeps its speed (``OracleObservation`` on a single env forces SB3's
    ``DummyVecEnv``). Observations and the observation space equal those of ``OracleObservation`` around the
    same distribution; ``infos[i]["terminal_observation"]`` shows the task of the episode that ended.

    :param venv: a task VecEnv (``make_task_vec_env``) with a flat ``Box`` observation space
    """

    def __init__(self, venv: VecEnv) -> None:
        if not is_task_vec_env(venv):
            raise ValueError(f"OracleVecEnv needs a task VecEnv (with get_tasks/set_tasks), got {type(venv).__name__}")
        space = venv.observation_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"OracleVecEnv needs a flat Box observation space, got {space}")
        self.task_size = int(venv.get_tasks(indices=[0])[0].as_array().size)  # type: ignore[attr-defined]
        dtype = space.dtype if np.issubdtype(space.dtype, np.floating) else np.dtype(np.float32)
        task_low = np.full(self.task_size, -np.inf)
        task_high = np.full(self.task_size, np.inf)
        oracle_space = gym.spaces.Box(
            low=np.concatenate([space.low.astype(dtype), task_low.astype(dtype)]),
            high=np.concatenate([space.high.astype(dtype), task_high.astype(dtype)]),
            dtype=dtype,  # type: ignore[arg-type]
        )
        super().__init__(venv, observation_space=oracle_space)
        self._tasks: list[Any] = [None] * self.num_envs
        self._task_arrays = np.zeros((self.num_envs, self.task_size), dtype=dtype)
        self._arrays_before = self._task_arrays.copy()  # tasks of the step under way (for terminal observations)

    def _refresh_tasks(self) -> list[Any]:
        tasks = self.venv.get_tasks()  # type: ignore[attr-defined]
        for i, task in enumerate(tasks):
            if task is not self._tasks[i]:
                self._task_arrays[i] = task.as_array()
                self._tasks[i] = task
        return tasks

    def _augment(self, obs: np.ndarray, task_arrays: np.ndarray) -> np.ndarray:
        dtype = self.observation_space.dtype
        obs = np.asarray(obs, dtype=dtype).reshape(len(task_arrays), -1)
        return np.concatenate([obs, task_arrays.astype(dtype)], axis=1)

    def reset(self) -> VecEnvObs:
        obs = self.venv.reset()
        self._refresh_tasks()
        return self._augment(obs, self._task_arrays)  # type: ignore[arg-type]

    def step_async(self, actions: np.ndarray) -> None:
        self._refresh_tasks()  # tasks may have been set since the last step (set_tasks)
        self._arrays_before = self._task_arrays.copy()
        self.venv.step_async(actions)

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        for i in np.flatnonzero(dones).tolist():
            if "terminal_observation" in infos[i]:
                terminal = self._augment(infos[i]["terminal_observation"][None], self._arrays_before[i : i + 1])
                infos[i]["terminal_observation"] = terminal[0]
        self._refresh_tasks()
        return self._augment(obs, self._task_arrays), rewards, dones, infos  # type: ignore[arg-type]


# --- env helpers -------------------------------------------------------------------------------------------------
#: Wrappers that change nothing a batched task VecEnv needs to know (tasks are set explicitly for evaluation).
_NEUTRAL_WRAPPERS: tuple[type, ...] = (gym.wrappers.OrderEnforcing, gym.wrappers.PassiveEnvChecker, TaskMixture)


def _wrapper_layout(env: gym.Env) -> tuple[bool, bool]:
    """``(oracle, only_neutral)``: whether ``env`` carries :class:`OracleObservation`, and whether every other
    wrapper is neutral (bookkeeping, :class:`TaskMixture`, or a time limit no shorter than the env's own)."""
    base = env.unwrapped
    oracle, only_neutral = False, True
    while isinstance(env, gym.Wrapper):
        if isinstance(env, OracleObservation):
            oracle = True
        elif isinstance(env, gym.wrappers.TimeLimit):
            own_limit = getattr(base, "max_episode_steps", None)
            only_neutral &= own_limit is not None and env._max_episode_steps >= own_limit
        elif not isinstance(env, _NEUTRAL_WRAPPERS):
            only_neutral = False
        env = env.env
    return oracle, only_neutral


def make_adaptation_vec_env(env: gym.Env, n_envs: int) -> VecEnv:
    """A fresh VecEnv of ``n_envs`` copies of ``env`` for adaptation and evaluation, batched whenever possible.

    The one builder behind :meth:`MetaAlgorithm.adapt_tasks` and :func:`evaluate_adaptation`.

    Plain distributions get the batched VecEnv of the task distribution, as :meth:`MetaAlgorithm.adapt_tasks`
    builds; the oracle form gets it wrapped in :class:`OracleVecEnv`; envs with other wrappers run through SB3's
    ``DummyVecEnv`` with their wrappers. Sub-envs keep the tasks they are given (no task mixture).
    """
    base = get_task_env(env)
    oracle, only_neutral = _wrapper_layout(env)
    batched = getattr(base, "batched_vec_env_cls", None) is not None
    if only_neutral and (not oracle or (batched and isinstance(base.observation_space, gym.spaces.Box))):
        base = copy.deepcopy(base)
        base.sample_task_on_reset = False  # evaluation sets every sub-env's task itself
        venv = make_task_vec_env(base, n_envs)
        return OracleVecEnv(venv) if oracle else venv
    inner = env
    while isinstance(inner, gym.Wrapper):
        if isinstance(inner, TaskMixture):
            raise ValueError("Evaluate on the task distribution without TaskMixture: evaluation sets each sub-env's task")
        inner = inner.env
    env = copy.deepcopy(env)
    get_task_env(env).sample_task_on_reset = False
    return make_task_vec_env(env, n_envs, vec_env_cls="dummy")


def _env_horizon(env: gym.Env) -> int | None:
    """Episode horizon of ``env``: the distribution's ``max_episode_steps``, else its spec's or time limit's."""
    horizon = getattr(env.unwrapped, "max_episode_steps", None)
    if horizon:
        return int(horizon)
    spec = getattr(env, "spec", None)
    if spec is not None and spec.max_episode_steps:
        return int(spec.max_episode_steps)
    while isinstance(env, gym.Wrapper):
        if isinstance(env, gym.wrappers.TimeLimit):
            return int(env._max_episode_steps)
        env = env.env
    return None


def _as_task_env(env: Any) -> gym.Env:
    """``env`` as a gymnasium env over a task distribution (an id is made with ``gym.make``); ValueError otherwise."""
    if isinstance(env, str):
        env = gym.make(env)
    if isinstance(env, VecEnv):
        raise ValueError(
            "evaluate_adaptation needs the task distribution (a gymnasium env such as PointMassTasks() or an id), "
            f"not a VecEnv ({type(env).__name__}): it builds its own batched VecEnv"
        )
    if not isinstance(env, gym.Env):
        raise ValueError(f"env must be a task-distribution env or a registered id, got {type(env).__name__}")
    get_task_env(env)  # ValueError for an env that is not a task distribution
    return env


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


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
    n_tasks = _check_int("n_tasks", n_tasks, 1)
    task_env = get_task_env(_as_task_env(env))
    if seed is None:
        return list(task_env.sample_tasks(n_tasks))
    seed = _check_int("seed", seed, 0)
    rng = np.random.default_rng([seed, _EVAL_TASK_STREAM])
    if callable(getattr(task_env, "_sample_task", None)):  # TaskEnv: draw with our own RNG, env untouched
        return [task_env._sample_task(rng) for _ in range(n_tasks)]
    sampler = copy.deepcopy(task_env)  # duck-typed distribution: reseed a copy
    sampler.reset(seed=seed)
    return list(sampler.sample_tasks(n_tasks))


# --- SB3 models as meta-models --------------------------------------------------------------------------------------
def _check_sb3_policy(model: BaseAlgorithm) -> ActorCriticPolicy:
    """The model's policy if :func:`evaluate_adaptation` supports it; ValueError saying why not otherwise."""
    name = type(model).__name__
    policy = getattr(model, "policy", None)
    if not isinstance(policy, ActorCriticPolicy):
        raise ValueError(
            f"evaluate_adaptation supports sb3_meta meta-learners and SB3 on-policy models with an ActorCriticPolicy "
            f"(PPO, A2C, TRPO); {name} has a {type(policy).__name__}"
        )
    if getattr(policy, "lstm_actor", None) is not None:
        raise ValueError(f"{name}: recurrent policies are not supported by evaluate_adaptation")
    if policy.use_sde or not isinstance(policy.action_dist, (DiagGaussianDistribution, CategoricalDistribution)):
        raise ValueError(
            f"{name}: evaluate_adaptation supports Gaussian (without gSDE) and categorical policies, "
            f"got {type(policy.action_dist).__name__}"
        )
    if model.get_vec_normalize_env() is not None:
        raise ValueError(f"{name} was trained with VecNormalize, which evaluate_adaptation does not apply")
    return policy


def _sample_observations(space: gym.spaces.Space, n: int) -> list[Any]:
    sampler = copy.deepcopy(space)  # never advance the space's own RNG
    sampler.seed(0)
    observations = [sampler.sample() for _ in range(n)]
    if isinstance(space, gym.spaces.Box):  # unbounded boxes sample wide; keep the check in a normal range
        observations = [np.clip(o, -10.0, 10.0).astype(space.dtype) for o in observations]
    return observations


def _check_same_distribution(source: ActorCriticPolicy, meta_policy: MetaActorCriticPolicy) -> None:
    """Assert that both policies give the same action distribution (the parameter transfer is exact)."""
    obs = _sample_observations(source.observation_space, 8)
    if isinstance(obs[0], dict):
        batch: Any = {k: np.stack([o[k] for o in obs]) for k in obs[0]}
    else:
        batch = np.stack([np.asarray(o) for o in obs])
    with th.no_grad():
        obs_t, _ = source.obs_to_tensor(batch)
        dist: Any = source.get_distribution(obs_t).distribution  # a Normal or a Categorical here (SB3: Distribution | list)
        mine = meta_policy.actor_dist_params(obs_t)  # type: ignore[arg-type]
        if isinstance(source.action_dist, DiagGaussianDistribution):
            assert mine.log_std is not None
            same = th.allclose(dist.mean, mine.loc, rtol=1e-6, atol=1e-6) and th.allclose(
                dist.stddev, th.exp(mine.log_std).expand_as(dist.stddev), rtol=1e-6, atol=1e-6
            )
        else:
            same = th.allclose(dist.probs, th.softmax(mine.loc, dim=-1), rtol=1e-6, atol=1e-6)
    if not same:
        raise RuntimeError(
            f"Copying the {type(source).__name__} into a meta-policy changed its action distribution: "
            "its architecture is not one MetaActorCriticPolicy can reproduce"
        )


def as_meta_model(model: BaseAlgorithm, max_episode_steps: int | None = None) -> MetaAlgorithm:
    """A meta-learner holding a copy of ``model``'s policy, to adapt it with the meta-learners' VPG step.

    An sb3_meta meta-learner is returned as it is. An SB3 on-policy model (PPO, A2C, TRPO) with a Gaussian or
    categorical ``ActorCriticPolicy`` is copied into a FOMAML with ``meta_batch_size=fast_batch_size=1`` and no env,
    whose :class:`MetaActorCriticPolicy` has the same architecture (net_arch, activation, features extractor,
    spaces) and the same parameters; the two give the same action distributions (checked). The VPG step then
    uses the meta-learners' defaults: ``gamma=0.99``, ``gae_lambda=1.0``, normalised advantages, a linear
    feature baseline. Neither ``model`` nor any global RNG is changed.

    :param model: the model
    :param max_episode_steps: episode horizon of the copy (needed for SB3 models, which have no task env)
    :return: the meta-learner
    """
    if isinstance(model, MetaAlgorithm):
        return model
    if not isinstance(model, BaseAlgorithm):
        raise ValueError(f"Expected an SB3 model (PPO, A2C, TRPO) or an sb3_meta meta-learner, got {type(model).__name__}")
    policy = _check_sb3_policy(model)
    kwargs = policy._get_constructor_parameters()
    observation_space, action_space = kwargs.pop("observation_space"), kwargs.pop("action_space")
    kwargs.pop("lr_schedule", None)
    kwargs["share_features_extractor"] = policy.share_features_extractor
    device = policy.device
    with th.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # weight init draws from torch's RNG
        adapter = FOMAML(
            MetaActorCriticPolicy,
            None,
            meta_batch_size=1,
            fast_batch_size=1,
            inner_lr=DEFAULT_ADAPT_LR,
            max_episode_steps=max_episode_steps,
            policy_kwargs=kwargs,
            device=device,
            _init_setup_model=False,
        )
        adapter.observation_space, adapter.action_space = observation_space, action_space
        adapter._setup_model()
    adapter.policy.load_state_dict(policy.state_dict())
    adapter.policy.set_training_mode(False)
    _check_same_distribution(policy, adapter.policy)
    return adapter


class _MeanActionPolicy:
    """The meta-policy with every sampled action replaced by the mean action (the mode for categorical)."""

    def __init__(self, policy: MetaActorCriticPolicy) -> None:
        self._policy = policy

    def __getattr__(self, name: str) -> Any:
        return getattr(self._policy, name)

    def sample(self, dist: Any, deterministic: bool = False) -> th.Tensor:
        return self._policy.sample(dist, deterministic=True)


class _EvalVecEnvs:
    """The evaluation VecEnvs, built on first use per (env, size, role) and reused until :meth:`close`.

    Building many MuJoCo sub-envs is not free; a callback that evaluates repeatedly keeps one of these.
    """

    def __init__(self) -> None:
        self._venvs: dict[tuple[int, int, str], tuple[gym.Env, VecEnv]] = {}

    def get(self, env: gym.Env, n_envs: int, role: str) -> VecEnv:
        key = (id(env), n_envs, role)
        if key not in self._venvs:
            self._venvs[key] = (env, make_adaptation_vec_env(env, n_envs))  # the env is kept alive so that its id stays unique
        return self._venvs[key][1]

    def close(self) -> None:
        for _, venv in self._venvs.values():
            venv.close()
        self._venvs = {}


def _evaluation_view(model: MetaAlgorithm, env: gym.Env, venvs: _EvalVecEnvs) -> MetaAlgorithm:
    """A shallow copy of ``model`` whose ``adapt_tasks`` samples ``env`` through ``venvs``: the evaluation's own
    cache of VecEnvs, so that evaluating (e.g. from a callback) leaves the model's state untouched."""
    view = copy.copy(model)
    view._adaptation_venv = lambda source, n_envs: (venvs.get(source, n_envs, "adapt"), get_task_env(source))  # type: ignore[method-assign, assignment]
    if model.max_episode_steps is None:
        horizon = _env_horizon(env)
        if horizon is not None:
            view.max_episode_steps = horizon
    return view


# --- evaluation ---------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _EvalSpec:
    """Validated arguments of one evaluation."""

    env: gym.Env
    tasks: list[Task]
    n_steps: int
    n_episodes: int
    seed: int | None
    deterministic: bool
    adapt_lr: float | list[float]
    horizon: int | None


def _check_model(model: Any, env: gym.Env) -> None:
    if not isinstance(model, BaseAlgorithm):
        raise ValueError(f"Expected an SB3 model (PPO, A2C, TRPO) or an sb3_meta meta-learner, got {type(model).__name__}")
    if not isinstance(model, MetaAlgorithm):
        _check_sb3_policy(model)
    for what, mine, theirs in (
        ("observation", model.observation_space, env.observation_space),
        ("action", model.action_space, env.action_space),
    ):
        if mine != theirs:
            raise ValueError(f"The model's {what} space {mine} does not match the env's {theirs}")


def _prepare(
    model: Any,
    env: gym.Env | str,
    n_tasks: int,
    n_steps: int,
    n_episodes: int,
    tasks: Sequence[Task] | None,
    seed: int | None,
    deterministic: bool,
    adapt_lr: float | Sequence[float] | None,
) -> _EvalSpec:
    """Check every argument (ValueError before any work) and draw the tasks."""
    n_steps = _check_int("n_steps", n_steps, 0)
    n_episodes = _check_int("n_episodes", n_episodes, 1)
    if tasks is None:
        n_tasks = _check_int("n_tasks", n_tasks, 1)
    if seed is not None:
        seed = _check_int("seed", seed, 0)
    # one number (kept as one in the results) or one per step, checked as adapt_tasks checks them
    default = float(getattr(model, "inner_lr", DEFAULT_ADAPT_LR))
    step_sizes = _check_step_sizes(adapt_lr, n_steps, default)
    step_size: float | list[float]
    if adapt_lr is None:
        step_size = default
    elif np.ndim(adapt_lr) == 0:
        step_size = _check_positive_float("adapt_lr", adapt_lr)
    else:
        step_size = step_sizes
    env = _as_task_env(env)
    _check_model(model, env)
    horizon = _env_horizon(env)
    if not isinstance(model, MetaAlgorithm) and horizon is None:
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
    return _EvalSpec(env, list(tasks), n_steps, n_episodes, seed, bool(deterministic), step_size, horizon)


def _run_evaluation(model: BaseAlgorithm, spec: _EvalSpec, venvs: _EvalVecEnvs) -> AdaptationResult:
    """Adapt to ``spec.tasks`` with :meth:`MetaAlgorithm.adapt_tasks` and collect the returns."""
    view = _evaluation_view(as_meta_model(model, max_episode_steps=spec.horizon), spec.env, venvs)
    n_envs = len(spec.tasks) * spec.n_episodes
    mean_action_returns: list[np.ndarray] = []
    if spec.deterministic:
        collect = view._collect
        measure_venv = venvs.get(spec.env, n_envs, "measure")
        if spec.seed is not None:
            measure_venv.seed(spec.seed)
        mean_policy = _MeanActionPolicy(view.policy)

        def _collect(venv: VecEnv, tasks: list[Task], params: Any, per_task: bool, n_episodes: int, on_step: Any) -> Any:
            # Measure the current parameters with the mean action on separate episodes (no torch RNG draws, so the
            # sampled adaptation episodes below are those of deterministic=False), then sample as usual.
            horizon = view._horizon(venv)
            batch = collect_task_batch(measure_venv, mean_policy, tasks, n_episodes, params, per_task, horizon)  # type: ignore[arg-type]
            assert batch is not None
            mean_action_returns.append(batch.episode_returns().mean(dim=1).cpu().numpy())
            return collect(venv, tasks, params, per_task, n_episodes, on_step)

        view._collect = _collect  # type: ignore[method-assign]
    _, returns = view.adapt_tasks(
        spec.tasks, n_steps=spec.n_steps, n_episodes=spec.n_episodes, env=spec.env, seed=spec.seed, adapt_lr=spec.adapt_lr
    )
    if spec.deterministic:
        returns = np.stack(mean_action_returns, axis=1)
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
    :meth:`MetaAlgorithm.adapt_tasks`; SB3 models go through :func:`as_meta_model`. The model, ``env`` and every
    global RNG are left as they were; the same ``seed`` gives the same result.

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
    spec = _prepare(model, env, n_tasks, n_steps, n_episodes, tasks, seed, deterministic, adapt_lr)
    venvs = _EvalVecEnvs()
    try:
        return _run_evaluation(model, spec, venvs)
    finally:
        venvs.close()
