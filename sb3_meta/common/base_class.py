"""``MetaAlgorithm``: the SB3 base class shared by MAML, FOMAML and Reptile.

It owns everything but the outer update: the task distribution and its batched VecEnv, the learn loop
with SB3 callbacks and logger, sampling of a meta-batch (one batch through the VecEnv and the policy), the
linear-baseline advantages, the inner VPG step, ``adapt``, and checkpoints that resume bit for bit.
Subclasses implement :meth:`MetaAlgorithm._outer_step`.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import inspect
import io
import json
import os
import pathlib
import pickle
import random
import sys
import time
import warnings
import zipfile
import zlib
from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar, cast

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.save_util import json_to_data, load_from_zip_file, recursive_getattr
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback
from stable_baselines3.common.utils import check_for_correct_spaces, configure_logger, safe_mean
from stable_baselines3.common.vec_env import (
    VecEnv,
    VecMonitor,
    is_vecenv_wrapped,
)

from sb3_meta.common.adaptation import InnerLoop, InnerLoopResult
from sb3_meta.common.meta_gradient import MetaObjective
from sb3_meta.common.normalization import NormalizationState, find_vec_normalize, normalized_vec_env
from sb3_meta.common.policies import MetaActorCriticPolicy, ParameterSnapshot, Params
from sb3_meta.common.rng import (
    TorchStream,
    get_rng_state,
    rng_state_from_json,
    rng_state_to_json,
    set_rng_state,
    unwrap_task_vec_env,
)
from sb3_meta.common.utils import all_finite, atomic_write, check_int, check_positive_float, check_step_sizes, stopwatch
from sb3_meta.envs.builders import AdaptationVecEnvs, env_horizon, make_task_vec_env, warn_if_adaptation_drops_vec_env_wrappers
from sb3_meta.envs.core import Task
from sb3_meta.envs.vec_env import (
    VecEnvLostError,
    get_task_env,
    is_task_vec_env,
    sub_envs_are_task_distributions,
    vec_env_distribution,
    with_task_api,
)
from sb3_meta.envs.wrappers import OracleObservation, OracleVecEnv, check_not_mixture

__all__ = ["MetaAlgorithm", "atomic_write"]

SelfMetaAlgorithm = TypeVar("SelfMetaAlgorithm", bound="MetaAlgorithm")


@dataclasses.dataclass
class IterationStart:
    """A model as a meta-iteration found it. A checkpoint written during the iteration (``CheckpointCallback``
    saves after any env step) records this state, so that training resumed from it reruns the whole iteration and
    ends as an uninterrupted run; an exception in the iteration (an env error, Ctrl-C) puts it back."""

    num_timesteps: int
    n_nonfinite: int
    rng_state: dict[str, Any]
    parameters: ParameterSnapshot
    normalization: NormalizationState | None  # the VecNormalize statistics, which every sampling pass updates


#: Entries of :attr:`MetaAlgorithm.iteration_times` kept (the most recent iterations).
ITERATION_TIMES_KEPT = 1000


class MetaAlgorithm(BaseAlgorithm):
    """Base class of gradient-based meta-RL algorithms on task distributions.

    :param policy: The policy model to use (``"MlpPolicy"`` or a :class:`MetaActorCriticPolicy` subclass)
    :param env: a task-distribution env (``sb3_meta.envs.TaskEnv``), a registered id such as
        ``"sb3_meta/PointMass-v0"``, or a task VecEnv from ``make_task_vec_env`` with
        ``meta_batch_size * fast_batch_size`` sub-envs
    :param meta_batch_size: tasks per meta-iteration
    :param fast_batch_size: episodes per task and per sampling pass
    :param inner_lr: α, learning rate of the inner VPG step
    :param n_inner_steps: inner VPG steps (each on fresh episodes)
    :param gamma: discount factor
    :param gae_lambda: GAE λ (1.0: Monte-Carlo returns minus the linear baseline)
    :param max_episode_steps: horizon of one episode; default: the env's ``max_episode_steps`` (or its spec's)
    :param normalize_advantage: normalise advantages per task
    :param max_nonfinite_iterations: consecutive iterations with a non-finite loss or gradient tolerated
        (each is rejected with a warning) before training stops with an error
    :param stats_window_size: Window size for the rollout logging (episodes)
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
    :param verbose: 0 no output, 1 info (training logs), 2 debug
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    # narrower than BaseAlgorithm's dict[str, type[BasePolicy]] (invariant dict): only meta-policies are accepted
    policy_aliases: ClassVar[dict[str, type[MetaActorCriticPolicy]]] = {"MlpPolicy": MetaActorCriticPolicy}  # type: ignore[assignment]
    policy: MetaActorCriticPolicy
    #: whether the outer step needs episodes sampled with the adapted parameters (MAML: yes, Reptile: no)
    _needs_post_adaptation_batch: ClassVar[bool] = True
    #: the inner step's optimiser (:data:`~sb3_meta.common.meta_gradient.INNER_OPTIMIZERS`; Reptile takes it as a
    #: parameter) and whether every inner step reuses the first pass's episodes; class defaults, so that a model
    #: saved before these existed loads with the behaviour it was trained with
    inner_optimizer: str = "sgd"
    reuse_inner_episodes: bool = False
    reuse_clip_range: float | None = 0.2

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
        self.meta_batch_size = check_int("meta_batch_size", meta_batch_size)
        self.fast_batch_size = check_int("fast_batch_size", fast_batch_size)
        self.inner_lr = check_positive_float("inner_lr", inner_lr)
        self.n_inner_steps = check_int("n_inner_steps", n_inner_steps)
        if not 0.0 <= float(gamma) <= 1.0 or not 0.0 <= float(gae_lambda) <= 1.0:
            raise ValueError(f"gamma and gae_lambda must lie in [0, 1], got {gamma}, {gae_lambda}")
        self.gamma, self.gae_lambda = float(gamma), float(gae_lambda)
        self.max_episode_steps = None if max_episode_steps is None else check_int("max_episode_steps", max_episode_steps)
        self.normalize_advantage = bool(normalize_advantage)
        self.max_nonfinite_iterations = check_int("max_nonfinite_iterations", max_nonfinite_iterations)
        if isinstance(policy, type) and not issubclass(policy, MetaActorCriticPolicy):
            raise ValueError(f"policy must be 'MlpPolicy' or a MetaActorCriticPolicy subclass, got {policy.__name__}")

        #: the task distribution as given, wrappers included (see :attr:`task_env`): what adaptation copies
        self.adaptation_env: Any = None
        venv = None
        if env is None and _init_setup_model:
            raise ValueError(
                f"{type(self).__name__} needs an env: a task distribution (e.g. PointMassTasks()), its registered id "
                f"(e.g. 'sb3_meta/PointMass-v0') or a task VecEnv; to restore a saved model, use "
                f"{type(self).__name__}.load(path)"
            )
        if env is not None:
            n_envs = self.meta_batch_size * self.fast_batch_size if _init_setup_model else None
            venv, self.adaptation_env = self._make_task_env(env, n_envs, seed, verbose)
            if not isinstance(venv.action_space, (spaces.Box, spaces.Discrete)):
                raise ValueError(f"{type(self).__name__} supports Box and Discrete action spaces, got {venv.action_space}")
            if not isinstance(venv.observation_space, spaces.Box):
                # SB3's own check would say "use MultiInputPolicy", which the meta-policies do not offer
                hint = (
                    "; flatten it with gymnasium.wrappers.FlattenObservation(env) (the task methods stay reachable "
                    "through the wrapper)"
                    if isinstance(venv.observation_space, (spaces.Dict, spaces.Tuple))
                    else ""
                )
                raise ValueError(
                    f"{type(self).__name__} supports Box observation spaces (its policies are MLPs on a flat vector; "
                    f"there is no MultiInputPolicy), got {venv.observation_space}{hint}"
                )
        super().__init__(
            policy=policy,
            env=venv,
            learning_rate=self.inner_lr,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            support_multi_env=True,
            monitor_wrapper=False,
            seed=seed,
            supported_action_spaces=(spaces.Box, spaces.Discrete),
        )
        self._n_iterations = 0
        self._n_nonfinite = 0
        #: set during a meta-iteration (and after one a callback stopped): what a checkpoint written then records
        self._iteration_start: IterationStart | None = None
        #: seconds per part of the last iterations (sampling, inner, meta-step, whole), for benchmarks and plots
        self.iteration_times: collections.deque[dict[str, float]] = collections.deque(maxlen=ITERATION_TIMES_KEPT)
        self._rng_state: dict[str, Any] | None = None
        # the checkpoint's RNG states when load had no env to give them to: set_env gives them
        self._unapplied_rng_state: dict[str, Any] | None = None
        #: the model's own torch random stream (made by _setup_model): learn and predict draw from it alone
        self._torch_stream: TorchStream | None = None
        self._adapt_venvs = AdaptationVecEnvs(max_entries=4)
        # the checkpoint's VecNormalize statistics while the model has no env (loaded without one); see normalization
        self._normalization: NormalizationState | None = None
        self._normalization_json: dict[str, Any] | None = None  # what save writes of them
        if _init_setup_model:
            self._setup_model()

    # --- env handling ------------------------------------------------------------------------------
    @property
    def task_env(self) -> Any:
        """The model's task sampler: the unwrapped distribution under :attr:`adaptation_env` (``None`` without one).

        Tasks are drawn with its RNG (seeded by the model's seed, saved in checkpoints). :attr:`adaptation_env`
        keeps the wrappers the model was trained with (an oracle observation, a reward transform...): ``adapt``
        and ``adapt_tasks`` sample copies of it, so that a model adapts on the env it was trained on.
        """
        return None if self.adaptation_env is None else get_task_env(self.adaptation_env)

    @property
    def normalization(self) -> NormalizationState | None:
        """The observation/reward normalisation the model trains and adapts with: a copy of the statistics of its
        env's ``VecNormalize`` (those of its checkpoint when loaded without an env), None without ``VecNormalize``.

        Saved in every checkpoint and put back into the ``VecNormalize`` the model is loaded (or ``set_env``) with;
        ``adapt``, ``adapt_tasks`` and ``evaluate_adaptation`` sample with them frozen.
        """
        if self._vec_normalize_env is not None:
            return NormalizationState.of(self._vec_normalize_env)
        return getattr(self, "_normalization", None)

    @staticmethod
    def _make_task_env(env: GymEnv | str, n_envs: int | None, seed: int | None, verbose: int = 0) -> tuple[VecEnv, Any]:
        """(task VecEnv wrapped in a VecMonitor, the distribution with its wrappers) from what the user passed.

        The second is ``None`` for a VecEnv the model cannot copy a sub-env of (e.g. a custom VecEnv class).
        """
        if isinstance(env, str):
            env = gym.make(env)
        if isinstance(env, VecEnv):
            if not is_task_vec_env(env):
                if not sub_envs_are_task_distributions(env):
                    raise ValueError(
                        f"{type(env).__name__} has no set_tasks/get_tasks and its sub-envs are not task distributions: "
                        "pass a task distribution, a VecEnv made by sb3_meta.envs.make_task_vec_env, or an SB3 VecEnv "
                        "of task distributions (e.g. make_vec_env('sb3_meta/PointMass-v0', n_envs=...))"
                    )
            if n_envs is not None and env.num_envs != n_envs:
                raise ValueError(
                    f"The VecEnv has {env.num_envs} sub-envs, but meta_batch_size x fast_batch_size = {n_envs}: "
                    "make it with make_task_vec_env(env, meta_batch_size * fast_batch_size) (or make_vec_env(..., "
                    f"n_envs={n_envs})), or set meta_batch_size and fast_batch_size so that their product is {env.num_envs}"
                )
            vec_normalize = find_vec_normalize(env)
            if vec_normalize is not None:
                NormalizationState.of(vec_normalize)  # refuses what it cannot save (dict observation statistics)
            if not is_task_vec_env(env):
                env = with_task_api(env)  # e.g. make_vec_env(...) of a task distribution: tasks via env_method
            warn_if_adaptation_drops_vec_env_wrappers(env)
            # A batched VecEnv's distribution; for SB3's VecEnvs, a copy of sub-env 0 owned by the model (as for a
            # task-distribution env), so that the model's seed and checkpoints cover task sampling: sub-env 0's own
            # task RNG is only seeded at the first reset, after the first meta-batch of tasks has been drawn (and
            # lives in another process for a SubprocVecEnv). The copy keeps sub-env 0's wrappers, which adaptation
            # must apply too.
            source: Any = vec_env_distribution(env)
            if source is not None and is_vecenv_wrapped(env, OracleVecEnv):
                source = OracleObservation(source)  # the oracle form, as the VecEnv presents it
            if vec_normalize is not None:
                # No VecMonitor added: above the VecNormalize it would count normalised rewards, and any wrapper
                # added to the chain breaks SB3's sync_envs_normalization (EvalCallback walks the training and eval
                # chains in step). As in SB3, a VecMonitor goes below it: VecNormalize(VecMonitor(task_venv)).
                return env, source
            if isinstance(env, VecMonitor):
                return env, source
            with warnings.catch_warnings():
                # make_vec_env puts each sub-env in a Monitor, and VecMonitor warns that it overrides their episode
                # statistics: both count the same episodes, and the learn loop reads VecMonitor's
                warnings.filterwarnings("ignore", message="The environment is already wrapped with a `Monitor`")
                return VecMonitor(env), source
        if not isinstance(env, gym.Env):
            raise ValueError(
                f"env must be a task-distribution env, a registered id or a task VecEnv, got {type(env).__name__}"
            )
        get_task_env(env)  # raises a clear error for envs without sample_tasks/reset_task
        check_not_mixture(env)
        if n_envs is None:  # placeholder until load() knows the sizes
            n_envs = 1
        venv = make_task_vec_env(env, n_envs, seed=seed)
        # the model's own copy: models built on one env object (or the user resetting it) must not share a sampler
        return VecMonitor(venv), copy.deepcopy(env)

    def _sample_tasks(self, n: int) -> list[Task]:
        if self.task_env is not None:
            return self.task_env.sample_tasks(n)
        return self.env.sample_task_batch(n)  # type: ignore[union-attr]

    def _horizon(self, venv: VecEnv | None = None) -> int:
        """Episode horizon: ``max_episode_steps``, else the model's env's, else that of ``venv`` (the env sampled).

        ``venv`` matters for a model without env (loaded without one) adapting on the env it is given.
        """
        if self.max_episode_steps is not None:
            return self.max_episode_steps
        venvs = [v for v in (self.env, venv) if v is not None]
        for source in (self.adaptation_env, *(getattr(unwrap_task_vec_env(v), "template_env", None) for v in venvs)):
            horizon = env_horizon(source)
            if horizon:
                return horizon
        for v in venvs:
            try:
                horizon = v.get_attr("max_episode_steps", indices=[0])[0]
            except AttributeError:  # a sub-env without the attribute (SB3's get_attr raises): no horizon there
                continue
            if horizon:
                return int(horizon)
        raise ValueError("Cannot tell the episode horizon: pass max_episode_steps=... to the algorithm")

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        """Set a new task distribution (or task VecEnv with ``n_envs`` sub-envs); spaces must match."""
        # the sizes the model samples with (load(..., meta_batch_size=...) may have changed them since it was saved)
        venv, source = self._make_task_env(env, self.meta_batch_size * self.fast_batch_size, self.seed)
        check_for_correct_spaces(venv, self.observation_space, self.action_space)
        normalization, vec_normalize = self.normalization, find_vec_normalize(venv)
        if normalization is not None:
            _check_normalization_fits(normalization, vec_normalize, "set_env")
        super().set_env(venv, force_reset=force_reset)
        if normalization is not None:  # the model's statistics go on with it (as its task sampler's state does)
            normalization.apply_to(vec_normalize)  # type: ignore[arg-type]  # checked above
            self._normalization = None
        old_task_env, self.adaptation_env = self.task_env, source
        task_env = self.task_env
        self._adapt_venvs.close()
        # The task sampler is the model's (seeded by its seed, saved in its checkpoints), not the new env's: a
        # model loaded without an env gets the checkpoint's RNG states now, as load(path, env=...) would have
        # given them (the torch stream was restored by load); otherwise the sampler's state carries over.
        if self._unapplied_rng_state is not None:
            state = rng_state_from_json(self._unapplied_rng_state)
            assert self.env is not None  # set by the SB3 set_env above
            if "vec_env" in state and len(state["vec_env"]["seeds"]) != unwrap_task_vec_env(self.env).num_envs:
                state.pop("vec_env")  # other sub-envs now
            set_rng_state(state, task_env, self.env, TorchStream(self.device))  # a throwaway stream takes "torch"
            self._unapplied_rng_state = None
        elif old_task_env is not None and hasattr(old_task_env, "task_rng") and hasattr(task_env, "task_rng"):
            task_env.task_rng = copy.deepcopy(old_task_env.task_rng)

    # --- setup -------------------------------------------------------------------------------------
    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        if self.env is not None and self.env.num_envs != self.meta_batch_size * self.fast_batch_size:
            raise ValueError(
                f"The VecEnv has {self.env.num_envs} sub-envs; expected meta_batch_size x fast_batch_size = "
                f"{self.meta_batch_size * self.fast_batch_size}"
            )
        # policy_class is typed type[BasePolicy]; the class is checked just below
        self.policy = self.policy_class(self.observation_space, self.action_space, self.lr_schedule, **self.policy_kwargs)  # type: ignore[assignment]
        if not isinstance(self.policy, MetaActorCriticPolicy):
            raise ValueError(f"policy must be a MetaActorCriticPolicy, got {type(self.policy).__name__}")
        self.policy = self.policy.to(self.device)
        # torch's state after seeding and weight initialisation becomes the model's own stream (not SB3: there,
        # models share torch's global generator, and building or training one changes what the next one draws)
        self._torch_stream = TorchStream(self.device)

    def set_random_seed(self, seed: int | None = None) -> None:
        """SB3's ``set_random_seed`` (Python, numpy, torch, action space), which also reseeds the model's task
        sampler and its own torch stream."""
        super().set_random_seed(seed)
        if seed is None:
            return
        if self.task_env is not None and hasattr(self.task_env, "_make_task_rng"):
            self.task_env._task_rng = self.task_env._make_task_rng(seed)
        if self._torch_stream is not None:
            self._torch_stream.set_state(
                th.get_rng_state(), th.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
            )

    def make_objective(self) -> MetaObjective:
        """The per-task losses of this algorithm (first order here; :class:`~sb3_meta.MAML` overrides it)."""
        return MetaObjective(
            self.policy,
            self.inner_lr,
            first_order=True,
            inner_optimizer=self.inner_optimizer,
            reuse_clip_range=self.reuse_clip_range,
        )

    @property
    def objective(self) -> MetaObjective:
        return self.make_objective()

    def inner_loop(self, venv: VecEnv | None = None, horizon: int | None = None) -> InnerLoop:
        """The inner loop of this model (its objective, horizon, γ, λ, advantage normalisation).

        :param venv: the VecEnv it will sample, if not the model's own (its horizon counts when the model has none)
        :param horizon: the horizon of the env it will sample, used unless the model sets ``max_episode_steps``
        """
        if self.reuse_inner_episodes and self._needs_post_adaptation_batch:
            raise ValueError(
                "reuse_inner_episodes is a Reptile option: MAML/FOMAML's meta-gradient replays the VPG steps on the "
                "episodes of each inner step; set reuse_inner_episodes=False"
            )
        if self.max_episode_steps is None and horizon is not None:
            horizon = check_int("horizon", horizon)
        else:
            horizon = self._horizon(venv)
        return InnerLoop(
            self.make_objective(),
            horizon,
            self.gamma,
            self.gae_lambda,
            self.normalize_advantage,
            reuse_episodes=self.reuse_inner_episodes,
        )

    @property
    def n_iterations(self) -> int:
        """Meta-iterations (outer updates) this model has made, over all its ``learn`` calls; saved and loaded with it.
        ``learn(..., reset_num_timesteps=True)`` restarts it at 0, like ``num_timesteps``. (SB3's logger shows it as
        ``time/iterations``.)"""
        return self._n_iterations

    @property
    def sampling_passes(self) -> int:
        """Sampling passes of ``meta_batch_size x fast_batch_size`` episodes per meta-iteration: one per inner step
        (one in all when the steps reuse the first pass's episodes), plus the post-adaptation pass of MAML/FOMAML."""
        return (1 if self.reuse_inner_episodes else self.n_inner_steps) + int(self._needs_post_adaptation_batch)

    def meta_parameters(self) -> Params:
        """The meta-parameters θ (detached copies)."""
        return {k: v.detach().clone() for k, v in self.policy.actor_parameters().items()}

    def _load_meta_parameters(self, params: Params) -> None:
        with th.no_grad():
            for name, p in self.policy.actor_parameters().items():
                p.copy_(params[name])

    # --- learn ---------------------------------------------------------------------------------
    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, BaseCallback]:
        # As SB3's, except that the env is not reset here: every sampling pass resets it, and an extra reset
        # would consume sub-env RNG draws (a resumed run would then diverge from an uninterrupted one).
        self.start_time = time.time_ns()
        if self.ep_info_buffer is None or reset_num_timesteps:
            from collections import deque

            self.ep_info_buffer = deque(maxlen=self._stats_window_size)
            self.ep_success_buffer = deque(maxlen=self._stats_window_size)
        if reset_num_timesteps:
            self.num_timesteps = 0
            self._episode_num = 0
            self._n_iterations = 0
        else:
            total_timesteps += self.num_timesteps
        self._total_timesteps = total_timesteps
        self._num_timesteps_at_start = self.num_timesteps
        if not self._custom_logger:
            self._logger = configure_logger(self.verbose, self.tensorboard_log, tb_log_name, reset_num_timesteps)
        callback = self._init_callback(callback, progress_bar)
        return total_timesteps, callback

    def learn(
        self: SelfMetaAlgorithm,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "MetaAlgorithm",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfMetaAlgorithm:
        """Meta-train for at least ``total_timesteps`` env steps (whole meta-iterations).

        :param total_timesteps: env steps to train on (pre- and post-adaptation episodes both count)
        :param callback: SB3 callback(s): ``on_step`` after every VecEnv step, ``on_rollout_start/end`` per
            meta-iteration; returning False stops training cleanly (the interrupted iteration is discarded)
        :param log_interval: log every ``log_interval`` meta-iterations
        :param tb_log_name: name of the run for TensorBoard logging
        :param reset_num_timesteps: whether to reset the current timestep number (used in logging)
        :param progress_bar: Display a progress bar using tqdm and rich
        """
        if self.env is None:
            raise ValueError("This model has no env: pass one to load(path, env=...) or call set_env(env) first")
        if tb_log_name == "MetaAlgorithm":
            tb_log_name = type(self).__name__
        total_timesteps, callback = self._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
        )
        self._iteration_start = None  # training goes on from the model as it is
        assert self.env is not None and self._torch_stream is not None
        # every callback hook runs with torch's global generator handed to it (TorchStream.paused): what it draws,
        # itself or through this model (predict with sampled actions, as in EvalCallback), leaves training alone
        with self._torch_stream.paused():
            callback.on_training_start(locals(), globals())
        while self.num_timesteps < total_timesteps:
            self._update_current_progress_remaining(self.num_timesteps, total_timesteps)
            if not self._meta_iteration(callback):
                break
            self._n_iterations += 1
            # SB3's own counter (BaseAlgorithm sets it, save/load keep it, reset_num_timesteps does not reset it), counted
            # with the iteration, all or nothing: a failed iteration counts no update
            self._n_updates += 1
            if log_interval is not None and log_interval > 0 and self._n_iterations % log_interval == 0:
                self.dump_logs()
        with self._torch_stream.paused():
            callback.on_training_end()
        return self

    def _meta_iteration(self, callback: BaseCallback) -> bool:
        """One meta-iteration, inner loop → outer step → record; False when a callback stopped training.

        Checkpoints written during it record the state it started from; an exception leaves the model as it found
        it (parameters, ``num_timesteps``, every RNG state), nothing half-applied.
        """
        assert self._torch_stream is not None
        start = IterationStart(
            self.num_timesteps,
            self._n_nonfinite,
            get_rng_state(self.task_env, self.env, self._torch_stream),
            self.policy.parameter_snapshot(),
            self.normalization,
        )
        self._iteration_start = start
        try:
            completed = self._run_meta_iteration(callback)
        except BaseException as error:
            try:
                self._restore_iteration_start(start)
            except Exception as env_error:  # the VecEnv cannot take its RNG states back: it is broken
                if isinstance(error, VecEnvLostError):
                    raise error from None  # it says so already (e.g. a Ray shard that no new actor could take over)
                raise VecEnvLostError(
                    f"The meta-iteration failed ({type(error).__name__}: {error}) and its VecEnv could not be put back "
                    f"({type(env_error).__name__}: {env_error}), e.g. a SubprocVecEnv worker died. The parameters, "
                    "num_timesteps and the model's own RNG states are as the iteration found them, and save() records "
                    "the iteration's start: save the model, then resume on a new VecEnv with load(path, env=...)."
                ) from error
            raise
        if completed:
            self._iteration_start = None
        return completed  # a stopped iteration keeps its start for the checkpoints written after it

    def _restore_iteration_start(self, start: IterationStart) -> None:
        """Put the model back as ``start`` recorded it; the VecEnv's RNG states last (a broken VecEnv raises there,
        and the start stays recorded for ``save``)."""
        self.policy.restore_parameters(start.parameters)
        self.num_timesteps, self._n_nonfinite = start.num_timesteps, start.n_nonfinite
        if start.normalization is not None and self._vec_normalize_env is not None:
            start.normalization.apply_to(self._vec_normalize_env)
        set_rng_state(start.rng_state, self.task_env, self.env, self._torch_stream)  # torch and tasks, then the VecEnv
        self._iteration_start = None

    def _run_meta_iteration(self, callback: BaseCallback) -> bool:
        times: dict[str, float] = {}
        stream = self._torch_stream
        assert stream is not None
        with stopwatch(times, "iteration"):
            with stream.paused():
                callback.on_rollout_start()
            inner = self._inner_loop(callback)  # D_i^(0..n-1), θ_i and D_i' for a fresh meta-batch of tasks
            if inner is None:
                return False
            callback.update_locals(locals())
            with stream.paused():
                callback.on_rollout_end()
            with stopwatch(times, "meta_step"):
                stats = self._checked_outer_step(inner)  # θ ← outer update (TRPO, or Reptile's interpolation)
        self._record(inner, stats, times)
        return True

    def _inner_loop(self, callback: BaseCallback) -> InnerLoopResult | None:
        """Sample ``meta_batch_size`` tasks and run the inner loop on the training env (None: a callback stopped)."""
        assert self.env is not None
        n_envs = self.env.num_envs

        stream = self._torch_stream
        assert stream is not None

        def on_step(new_obs: np.ndarray, rewards: np.ndarray, dones: np.ndarray, infos: list[dict]) -> bool:
            self.num_timesteps += n_envs
            with stream.paused():  # a callback draws from torch's global generator, not from the model's stream
                callback.update_locals(locals())
                return callback.on_step()

        tasks = self._sample_tasks(self.meta_batch_size)
        with stream.active():  # the actions are drawn from the model's own stream
            return self.inner_loop().run(
                self.meta_parameters(),
                self.env,
                tasks,
                self.n_inner_steps,
                self.fast_batch_size,
                sample_last=self._needs_post_adaptation_batch,
                on_step=on_step,
            )

    def _checked_outer_step(self, inner: InnerLoopResult) -> dict[str, float]:
        """:meth:`_outer_step`, with a non-finite update rejected (parameters kept) and an error after too many."""
        # non-finite adapted parameters (e.g. NaN rewards) stopped sampling early: the update is rejected
        assert self._torch_stream is not None
        with self._torch_stream.active():  # sb3-contrib's conjugate gradient starts from a random vector
            stats = self._outer_step(inner) if all_finite(inner.adapted) else None
        if stats is not None:
            self._n_nonfinite = 0
            return stats
        self._n_nonfinite += 1
        warnings.warn(f"Non-finite loss or gradient at meta-iteration {self._n_iterations}: update rejected")
        if self._n_nonfinite >= self.max_nonfinite_iterations:
            raise RuntimeError(
                f"{self._n_nonfinite} consecutive meta-iterations had a non-finite loss or gradient; stopping. "
                "Lower inner_lr/target_kl or check the env's rewards and observations for NaN/inf."
            )
        return {}

    def _outer_step(self, inner: InnerLoopResult) -> dict[str, float] | None:
        """Update the meta-parameters from this iteration's inner loop; None if the update was non-finite."""
        raise NotImplementedError

    def _record(self, inner: InnerLoopResult, stats: dict[str, float], times: dict[str, float]) -> None:
        """Log the iteration (written by :meth:`dump_logs`) and keep its times."""
        self.logger.record("rollout/pre_adapt_return", inner.batches[0].mean_return())
        if inner.has_outer_batch:  # sampled with the adapted parameters θ_i (after the last inner step)
            self.logger.record("rollout/post_adapt_return", inner.batches[-1].mean_return())
        elif len(inner.batches) > 1:  # Reptile samples nothing after its last inner step: the last batch it has
            self.logger.record("rollout/last_inner_batch_return", inner.batches[-1].mean_return())
        for key, value in stats.items():
            self.logger.record(key, value)
        self._record_episodes(inner)
        log_std = getattr(self.policy, "log_std", None)
        self.logger.record("train/log_std", float(log_std.mean().item()) if log_std is not None else 0.0)
        steps = sum(b.n_steps for b in inner.batches)
        iteration_times = {
            "sampling_s": inner.times["sampling"],
            "advantages_s": inner.times["advantages"],
            "inner_s": inner.times["inner"],
            "meta_step_s": times["meta_step"],
            "iteration_s": times["iteration"],
        }
        for key, value in iteration_times.items():
            self.logger.record(f"time/{key}", value)
        self.logger.record("time/fps", int(steps / max(times["iteration"], 1e-9)))
        self.iteration_times.append({**iteration_times, "env_steps": float(steps)})

    def _record_episodes(self, inner: InnerLoopResult) -> None:
        """Every episode the iteration sampled (ended by the env or by the horizon) into SB3's episode buffer, so
        that ``rollout/ep_rew_mean`` is the mean return of the sampled episodes (a VecMonitor only sees those
        the env ends itself, and misses those cut at ``max_episode_steps``)."""
        assert self.ep_info_buffer is not None
        for batch in inner.batches:
            returns = batch.episode_returns().flatten().tolist()
            lengths = batch.mask.sum(dim=1).flatten().tolist()
            self.ep_info_buffer.extend({"r": r, "l": int(n)} for r, n in zip(returns, lengths))

    def dump_logs(self) -> None:
        """Write the logs of the last iteration, with the episode statistics and counters (SB3's ``dump_logs``)."""
        time_elapsed = max((time.time_ns() - self.start_time) / 1e9, sys.float_info.epsilon)
        self.logger.record("time/iterations", self._n_iterations, exclude="tensorboard")
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")  # as SB3's on-policy algorithms
        if self.ep_info_buffer is not None and len(self.ep_info_buffer) > 0:
            self.logger.record("rollout/ep_rew_mean", safe_mean([ep["r"] for ep in self.ep_info_buffer]))
            self.logger.record("rollout/ep_len_mean", safe_mean([ep["l"] for ep in self.ep_info_buffer]))
        self.logger.record("time/time_elapsed", int(time_elapsed), exclude="tensorboard")
        self.logger.record("time/total_timesteps", self.num_timesteps, exclude="tensorboard")
        self.logger.dump(step=self.num_timesteps)

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """SB3's ``predict``; a sampled action draws from the model's own torch stream (torch's global generator is
        left as it was), so that two models with the same seed predict the same actions however they are used.

        :param observation: the input observation
        :param state: unused (no recurrent policies); passed on as SB3 does
        :param episode_start: unused, as ``state``
        :param deterministic: return the distribution's mode instead of a sample
        :return: the action and the next state (None)
        """
        if self._torch_stream is None:
            return super().predict(observation, state, episode_start, deterministic)
        with self._torch_stream.active():
            return super().predict(observation, state, episode_start, deterministic)

    # --- adaptation ------------------------------------------------------------------------------
    def adapt_tasks(
        self,
        tasks: Sequence[Task],
        n_steps: int = 1,
        n_episodes: int | None = None,
        env: Any = None,
        seed: int | None = None,
        adapt_lr: float | Sequence[float] | None = None,
    ) -> tuple[Params, np.ndarray]:
        """Adapt to every task at once: ``n_steps`` inner VPG steps from θ, each on fresh episodes.

        Leaves the meta-parameters, the training env and every global RNG untouched.

        :param adapt_lr: step size of every step, or one per step (default ``inner_lr``)
        :return: the adapted stacked parameters and the mean return per task before each step and after the
            last one, shape (K, n_steps + 1)
        """
        n_steps = check_int("n_steps", n_steps, minimum=0)
        n_episodes = self.fast_batch_size if n_episodes is None else check_int("n_episodes", n_episodes)
        tasks = list(tasks)
        if not tasks:
            raise ValueError("adapt_tasks needs at least one task")
        source = env if env is not None else self.adaptation_env
        if source is None:
            raise ValueError("No task distribution: pass env=... (the model has none, e.g. loaded without env)")
        step_sizes = check_step_sizes(adapt_lr, n_steps, self.inner_lr)
        check_not_mixture(source)
        # separate from the training env and its RNGs; observations normalised as in training, statistics frozen
        venv = normalized_vec_env(self._adapt_venvs.get(source, len(tasks) * n_episodes), self.normalization)
        check_for_correct_spaces(venv, self.observation_space, self.action_space)
        inner = self.inner_loop(venv).adapt(self.meta_parameters(), venv, tasks, n_steps, n_episodes, seed, step_sizes)
        return inner.adapted, inner.returns_per_task()

    def adapt(
        self: SelfMetaAlgorithm,
        env: Any = None,
        n_steps: int | None = None,
        seed: int | None = None,
        n_episodes: int | None = None,
        steps: int | None = None,
        adapt_lr: float | Sequence[float] | None = None,
    ) -> SelfMetaAlgorithm:
        """Adapt the meta-policy to one task and return a new model holding the adapted parameters.

        :param env: a task from ``sample_tasks()`` (applied to a copy of the model's env), or a task-distribution
            env already set to a task
        :param n_steps: inner VPG steps, each on fresh episodes (default 1); ``steps`` is an alias
        :param seed: seed of the adaptation episodes (the global RNGs are left as they were)
        :param n_episodes: episodes per step (default ``fast_batch_size``)
        :param adapt_lr: step size of every step, or one per step (default ``inner_lr``)
        :return: a model of the same class whose policy holds θ_task; the original model is unchanged
        """
        if n_steps is not None and steps is not None and n_steps != steps:
            raise ValueError(f"Give n_steps or steps, not both ({n_steps} != {steps})")
        n_steps = 1 if n_steps is None and steps is None else (n_steps if n_steps is not None else steps)
        task_source: Any
        if isinstance(env, Task):
            if self.task_env is None:
                raise ValueError("This model has no task distribution to apply the task to: pass an env set to the task")
            task, task_source = env, self.adaptation_env
            self.task_env.validate_task(task) if hasattr(self.task_env, "validate_task") else None
        elif env is not None and not isinstance(env, gym.Env) and not callable(getattr(env, "get_task", None)):
            task_type = getattr(self.task_env, "task_type", Task)
            raise ValueError(
                f"adapt expects a task (a {task_type.__name__} from sample_tasks()) or a task-distribution env set to "
                f"a task, got {type(env).__name__}: e.g. model.adapt(env.sample_tasks(1)[0])"
            )
        elif env is not None:
            check_not_mixture(env)  # before asking for its task: a mixture has none to keep
            task_source = env
            task = get_task_env(env).get_task()
        else:
            raise ValueError("adapt needs a task (from sample_tasks()) or an env set to a task")
        adapted, returns = self.adapt_tasks(  # n_steps is an int here: steps stands in for a None n_steps
            [task], n_steps=cast(int, n_steps), n_episodes=n_episodes, env=task_source, seed=seed, adapt_lr=adapt_lr
        )
        buffer = io.BytesIO()
        self.save(buffer)
        buffer.seek(0)
        # load() reseeds the global RNGs with the model's seed (SB3's _setup_model); keep them as they were
        np_state, py_state = np.random.get_state(), random.getstate()
        with th.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            new_model = type(self).load(buffer, device=self.device)
        np.random.set_state(np_state)
        random.setstate(py_state)
        new_model._load_meta_parameters({k: v[0] for k, v in adapted.items()})
        new_model.adaptation_env = copy.deepcopy(task_source)  # the task's env, wrappers included
        new_model.task_env.reset_task(task)
        new_model.adaptation_returns = returns[0]  # type: ignore[attr-defined]  # only models from adapt() have it
        return new_model

    # --- checkpoints -----------------------------------------------------------------------------
    def _excluded_save_params(self) -> list[str]:
        excluded = [
            "adaptation_env",
            "_iteration_start",
            "_adapt_venvs",
            "adaptation_returns",
            "iteration_times",
            "_torch_stream",
            "_unapplied_rng_state",
            "_normalization",
        ]
        return [*super()._excluded_save_params(), *excluded]

    def save(self, path: str | pathlib.Path | io.BufferedIOBase, exclude: Any = None, include: Any = None) -> None:
        """SB3 ``save`` plus every RNG state training draws on, so that training resumes bit for bit.

        A ``str`` or ``PathLike`` path is written atomically (:func:`atomic_write`): to a temporary file in the same
        folder, flushed and fsynced, then renamed over ``path``, so that a crash or a kill while saving leaves the
        previous checkpoint (or none) at ``path``, never a truncated one. As with SB3, ``.zip`` is appended to a
        path without suffix. A file object is written as SB3 writes it.

        The RNG states and the class name are stored as plain JSON in the checkpoint's ``data`` entry, so that
        :meth:`load` reads them (and refuses another library's checkpoint) without unpickling anything.

        A checkpoint written during a meta-iteration (``CheckpointCallback`` saves after any env step), or after a
        callback stopped one, records the model as that iteration found it (:class:`IterationStart`): training
        resumed from it reruns the iteration and ends as an uninterrupted run, bit for bit.
        """
        start = self._iteration_start
        if start is not None:  # during an iteration: the state it started from (see IterationStart)
            state = start.rng_state
        else:
            state = get_rng_state(self.task_env, self.env, self._torch_stream)
        if self._unapplied_rng_state is not None:  # loaded without an env: keep the sampler states for set_env
            state = {**rng_state_from_json(self._unapplied_rng_state), **state}
        self._rng_state = rng_state_to_json(state)
        normalization = start.normalization if start is not None else self.normalization
        self._normalization_json = None if normalization is None else normalization.to_json()
        self._checkpoint_class = type(self).__name__
        live_counters = self.num_timesteps, self._n_nonfinite
        if start is not None:  # the parameters are those of the start until the outer step, after every callback
            self.num_timesteps, self._n_nonfinite = start.num_timesteps, start.n_nonfinite
        try:
            if isinstance(path, (str, os.PathLike)):
                save = super().save  # zero-argument super() does not work in the lambda below
                atomic_write(_checkpoint_path(path), lambda file: save(file, exclude=exclude, include=include))
            else:
                super().save(path, exclude=exclude, include=include)
        finally:
            self.num_timesteps, self._n_nonfinite = live_counters

    @classmethod
    def load(  # type: ignore[override]
        cls: type[SelfMetaAlgorithm],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | str | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfMetaAlgorithm:
        """Load a checkpoint. ``env`` may be a task distribution, a registered id or a task VecEnv.

        The RNG states saved with the checkpoint are restored into ``env`` (and the model's torch stream), so that
        ``learn(..., reset_num_timesteps=False)`` continues as if training had never stopped.

        As with SB3, ``kwargs`` (and ``custom_objects``) override saved attributes. Hyperparameters set that way
        are checked as the constructor checks them. ``seed=...`` reseeds the model and its env, as in SB3,
        instead of restoring the saved RNG states. New ``meta_batch_size``/``fast_batch_size`` size the env
        made from a task distribution accordingly; the saved sub-env RNG states then do not fit and are not
        restored: the sub-envs are seeded from the model's seed.

        The file is opened once. Its metadata (the class that saved it, the sizes) is read as JSON first, without
        unpickling anything: another library's checkpoint is refused there. SB3's ``load`` then reads the rest,
        once (the spaces, if decoded early to check ``env``, are handed to it rather than decoded again).

        :raises FileNotFoundError: no file at ``path`` (nor at ``path + ".zip"``)
        :raises ValueError: the file is truncated or corrupt, is not a checkpoint of this class (or one of its
            subclasses), or ``env`` does not match it
        """
        file, opened = _open_checkpoint(path)
        try:
            data = _read_checkpoint_data(file, path)
            saved_class = data.get("_checkpoint_class")
            if not isinstance(saved_class, str) or saved_class not in {c.__name__ for c in (cls, *_all_subclasses(cls))}:
                origin = (
                    f"it was saved by {saved_class}: load it with {saved_class}.load"
                    if isinstance(saved_class, str)
                    else "it was saved by another library, e.g. an SB3 algorithm: load it with that library's load"
                )
                raise ValueError(f"{path!r} is not a {cls.__name__} checkpoint ({origin})")
            _check_complete_checkpoint(file, data, path)
            source = None
            custom = dict(custom_objects or {})
            overrides = {**custom, **kwargs}  # SB3's load: custom_objects replace saved data, then kwargs win
            cls._check_hyperparameters(data, overrides)  # before any env is made or file read further
            n_envs = overrides.get("meta_batch_size", data["meta_batch_size"]) * overrides.get(
                "fast_batch_size", data["fast_batch_size"]
            )
            saved_normalization = data.get("_normalization_json")
            normalization = None if saved_normalization is None else NormalizationState.from_json(saved_normalization)
            if env is not None:
                env, source = cls._make_task_env(env, n_envs, None)
                if normalization is not None:
                    _check_normalization_fits(normalization, find_vec_normalize(env), "load")
                encoded = {key: data[key] for key in ("observation_space", "action_space") if key in data}
                saved_spaces = json_to_data(json.dumps(encoded), custom_objects=custom_objects)
                if len(saved_spaces) == 2:
                    try:
                        check_for_correct_spaces(env, saved_spaces["observation_space"], saved_spaces["action_space"])
                    except ValueError as e:
                        raise ValueError(f"The env given to load does not match the checkpoint: {e}") from e
                    custom = {**saved_spaces, **custom}  # decoded once: SB3's load takes them as they are
            try:
                model = super().load(
                    file,
                    env=env,
                    device=device,
                    custom_objects=custom or None,
                    print_system_info=print_system_info,
                    force_reset=force_reset,
                    **kwargs,
                )
            except (pickle.UnpicklingError, KeyError) as e:  # an entry replaced, or a tensor of the policy missing
                # (torch's own message for the first suggests weights_only=False, which would not help here)
                what = (
                    "a tensor entry holds something else"
                    if isinstance(e, pickle.UnpicklingError)
                    else "an entry lacks what save writes"
                )
                raise ValueError(
                    f"{path!r} is not a complete checkpoint: {what} ({type(e).__name__} in SB3's load). Load an intact "
                    "copy, or save the model again."
                ) from e
        finally:
            if opened:
                file.close()
        if "inner_lr" in overrides:  # SB3's learning_rate and lr_schedule follow it, as in the constructor
            model.learning_rate = model.inner_lr
            model._setup_lr_schedule()
        model.adaptation_env = source
        model._adapt_venvs = AdaptationVecEnvs(max_entries=4)
        if normalization is not None and model._vec_normalize_env is not None:
            normalization.apply_to(model._vec_normalize_env)  # the statistics that go with the parameters
        model._normalization = normalization if model._vec_normalize_env is None else None
        if model.env is None:
            model.n_envs = n_envs  # what set_env will be given (SB3 requires the same number as the model's)
        if "seed" in kwargs:  # an explicit seed reseeds everything, the task sampler made above included
            model.set_random_seed(model.seed)
        elif model._rng_state is not None and model.env is None:
            model._unapplied_rng_state = model._rng_state  # set_env applies it
            set_rng_state(model._rng_state, None, None, model._torch_stream)  # the torch stream only, without an env
        elif model._rng_state is not None:
            state = rng_state_from_json(model._rng_state)
            if model.env is not None and n_envs != data["meta_batch_size"] * data["fast_batch_size"]:
                state = {key: value for key, value in state.items() if key != "vec_env"}  # other sub-envs now
            set_rng_state(state, model.task_env, model.env, model._torch_stream)
        return model

    @classmethod
    def _check_hyperparameters(cls, data: dict[str, Any], overrides: dict[str, Any]) -> None:
        """Run the constructor's checks on a checkpoint's hyperparameters with load's ``overrides`` applied.

        SB3's ``load`` writes ``kwargs`` into the model's attributes without the constructor's checks; the checks
        live in the constructors (one place per class), so the values are given to a bare constructor call
        (no env, no model set up) and any error it raises is load's.
        """
        names: set[str] = set()  # every named constructor parameter, along the chain of **kwargs (FOMAML → MAML → base)
        for klass in cls.__mro__:
            if issubclass(klass, MetaAlgorithm) and "__init__" in vars(klass):
                kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
                names.update(n for n, p in inspect.signature(klass.__init__).parameters.items() if p.kind in kinds)
        names -= {"self", "policy", "env", "device", "tensorboard_log", "_init_setup_model"}
        for name in ("learning_rate", "lr_schedule"):
            if name in overrides:  # SB3's name would be written and never used: the inner step reads inner_lr
                raise ValueError(
                    f"load: {cls.__name__} has no {name} to override; its step size is inner_lr: pass inner_lr=... "
                    "(the outer step is set by target_kl for MAML and FOMAML, by outer_lr for Reptile)"
                )
        if not names.intersection(overrides):
            return
        values: dict[str, Any] = {
            name: overrides.get(name, data.get(name)) for name in names if name in overrides or name in data
        }
        try:
            cls("MlpPolicy", None, **values, _init_setup_model=False)
        except ValueError as e:
            raise ValueError(f"load: {e}") from e

    def set_parameters(
        self,
        load_path_or_dict: str | pathlib.Path | io.BufferedIOBase | dict[str, Any],
        exact_match: bool = True,
        device: th.device | str = "auto",
    ) -> None:
        """SB3's ``set_parameters``, all or nothing: every object name, key and shape is checked before the first
        tensor is copied, so that parameters that do not fit raise and leave the model as it was.

        :param load_path_or_dict: a checkpoint (path or file object), or a dict as from :meth:`get_parameters`
        :param exact_match: every object and every key of the model must be given (False: a subset may be);
            keys the model does not have are refused either way
        :param device: device to load a checkpoint's tensors on
        :raises ValueError: an object name the model does not have (or, with ``exact_match``, one missing)
        :raises RuntimeError: a state-dict key missing or unknown, or a tensor of another shape (as torch's
            ``load_state_dict``), listing all of them
        """
        if isinstance(load_path_or_dict, dict):
            params = load_path_or_dict
        else:
            file, opened = _open_checkpoint(load_path_or_dict)
            try:
                _read_checkpoint_data(file, load_path_or_dict, require_data=False)
                _, params, _ = load_from_zip_file(file, device=device, load_data=False)
            finally:
                if opened:
                    file.close()
        _check_parameters(self, params, exact_match)
        super().set_parameters(params, exact_match=exact_match, device=device)


def _all_subclasses(cls: type) -> list[type]:
    out: list[type] = []
    sub: type  # type.__subclasses__ returns list[Self], which mypy cannot solve for a plain type
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


def _checkpoint_path(path: str | os.PathLike[str]) -> str:
    """The file SB3 saves ``path`` as: ``.zip`` appended to a path without suffix."""
    path = os.fspath(path)
    return f"{path}.zip" if pathlib.Path(path).suffix == "" else path


def _open_checkpoint(path: Any) -> tuple[Any, bool]:
    """(binary file, whether it was opened here) for a path or a file object; tries ``path + ".zip"`` as SB3."""
    if not isinstance(path, (str, os.PathLike)):
        return path, False
    path = os.fspath(path)
    for candidate in (path, f"{path}.zip"):
        try:
            return open(candidate, "rb"), True
        except FileNotFoundError:
            continue
    raise FileNotFoundError(f"No checkpoint at {path!r} (nor at {path + '.zip'!r}): check the path, or save a model there")


#: what load reads from a checkpoint before SB3's load: the zip entries and the saved attributes it needs
_CHECKPOINT_ENTRIES = ("data", "policy.pth")
_CHECKPOINT_KEYS = ("meta_batch_size", "fast_batch_size", "policy_class", "observation_space", "action_space")


def _check_complete_checkpoint(file: Any, data: dict[str, Any], path: Any) -> None:
    """Raise a ``ValueError`` naming what a checkpoint lacks (an entry, a saved attribute, a batch size that is not
    an integer) before anything is built from it; the file is left at the position it had."""
    start = file.tell()
    try:
        with zipfile.ZipFile(file) as archive:
            missing = [name for name in _CHECKPOINT_ENTRIES if name not in archive.namelist()]
    finally:
        file.seek(start)
    missing += [f"the saved {key!r}" for key in _CHECKPOINT_KEYS if key not in data]
    if missing:
        raise ValueError(
            f"{path!r} is not a complete checkpoint: it lacks {', '.join(missing)}. Load an intact copy, or save the "
            "model again."
        )
    for key in ("meta_batch_size", "fast_batch_size"):
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{path!r} is not a valid checkpoint: its saved {key} is {value!r}, not an integer >= 1")


def _read_checkpoint_data(file: Any, path: Any, require_data: bool = True) -> dict[str, Any]:
    """The ``data`` entry of a checkpoint as raw JSON (pickled entries left encoded), every entry's CRC checked;
    the file is left at the position it had.

    :raises ValueError: the file is not a zip archive, is truncated or corrupt, or (``require_data``) has no
        ``data`` entry
    """
    start = file.tell()
    try:
        with zipfile.ZipFile(file) as archive:
            bad_entry = archive.testzip()  # reads every entry: CRC errors here, not halfway through a load
            if bad_entry is not None:
                raise zipfile.BadZipFile(f"bad CRC-32 for the entry {bad_entry!r}")
            # A file cut short loses the archive's end record; zipfile may then find the end record of a zip
            # stored inside it (the torch files) and open that one, whose first entry starts mid-file.
            entries = archive.infolist()
            if entries and min(entry.header_offset for entry in entries) != 0:
                raise zipfile.BadZipFile("the archive found is not at the start of the file (a zip stored inside it)")
            if "data" not in archive.namelist():
                if require_data:
                    raise ValueError(f"{path!r} is not a checkpoint: the zip archive has no 'data' entry (not saved by save)")
                return {}
            data = json.loads(archive.read("data").decode())
    except (zipfile.BadZipFile, zlib.error, EOFError, UnicodeDecodeError, json.JSONDecodeError, NotImplementedError) as e:
        raise ValueError(
            f"{path!r} is not a checkpoint that can be read: the file is truncated or corrupt "
            f"({type(e).__name__}: {e}). Load an intact copy, or save the model again."
        ) from e
    finally:
        file.seek(start)
    if not isinstance(data, dict):
        raise ValueError(f"{path!r} is not a checkpoint: its 'data' entry is a JSON {type(data).__name__}, not an object")
    return data


def _check_parameters(model: BaseAlgorithm, params: dict[str, Any], exact_match: bool) -> None:
    """Every check of SB3's ``set_parameters`` and torch's ``load_state_dict``, before anything is copied."""
    expected_objects = set(model._get_torch_save_params()[0])
    problems: list[str] = []
    for name, given in params.items():
        try:
            attr = recursive_getattr(model, name)
        except Exception as e:
            raise ValueError(
                f"Key {name!r} is an invalid object name: the model's objects are {sorted(expected_objects)}"
            ) from e
        if not isinstance(given, dict) and not hasattr(given, "keys"):
            problems.append(f"{name}: expected a state dict, got {type(given).__name__}")
        elif isinstance(attr, th.optim.Optimizer):
            groups, saved_groups = attr.param_groups, given.get("param_groups", [])
            sizes, saved_sizes = [len(g["params"]) for g in groups], [len(g.get("params", [])) for g in saved_groups]
            if "state" not in given or sizes != saved_sizes:
                problems.append(
                    f"{name}: an optimizer state dict with {len(groups)} parameter groups of sizes {sizes} was expected, "
                    f"got {len(saved_groups)} of sizes {saved_sizes}"
                )
        elif isinstance(attr, th.nn.Module):
            own = attr.state_dict()
            unknown = [key for key in given if key not in own]
            missing = [key for key in own if key not in given] if exact_match else []
            if unknown:
                problems.append(f"{name}: unknown keys {unknown} (the module's keys are {list(own)})")
            if missing:
                problems.append(f"{name}: missing keys {missing} (pass exact_match=False to set only some)")
            for key in (k for k in given if k in own):
                value = given[key]
                if not isinstance(value, th.Tensor):
                    problems.append(f"{name}.{key}: expected a tensor, got {type(value).__name__}")
                elif isinstance(own[key], th.Tensor) and value.shape != own[key].shape:
                    problems.append(f"{name}.{key}: shape {tuple(value.shape)} given, {tuple(own[key].shape)} expected")
        else:
            problems.append(f"{name}: a {type(attr).__name__}, not a torch module or optimizer")
    if problems:
        raise RuntimeError(
            "The parameters do not fit the model, nothing was set:\n  " + "\n  ".join(problems) + "\n"
            "Pass parameters from get_parameters() of a model of the same class, spaces and net_arch."
        )
    if exact_match and set(params) != expected_objects:
        raise ValueError(
            "Names of parameters do not match agents' parameters: "
            f"expected {expected_objects}, got {set(params)} (pass exact_match=False to set only some)"
        )


def _check_normalization_fits(normalization: NormalizationState, vec_normalize: Any, where: str) -> None:
    """Refuse an env for a model trained with ``VecNormalize`` (``where``: load or set_env) that it cannot normalise."""
    if vec_normalize is None:
        raise ValueError(
            f"The model was trained with VecNormalize, but the env given to {where} has none: wrap the task VecEnv, "
            "e.g. VecNormalize(make_task_vec_env(...)) (the model's statistics are put into it)"
        )
    normalization.check_fits(vec_normalize, f"the env given to {where}")
