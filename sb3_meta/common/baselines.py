"""The non-meta baselines of the MAML paper: a policy pretrained on the task mixture, a random one, an oracle.

- :func:`train_pretrained`: SB3 PPO (or sb3-contrib TRPO) trained on the task mixture (a fresh task at every
  reset), then adapted at test time with the meta-learners' VPG step, like the meta-learned initialisations;
- :func:`make_random`: the same policy freshly initialised;
- :func:`train_oracle`: PPO/TRPO on the oracle form of the distribution (task in the observation); evaluate it
  with ``n_steps=0`` through :func:`~sb3_meta.envs.make_oracle_env`.

All of them sample through the distribution's batched VecEnv (see :func:`make_mixture_vec_env`), not one
Python env per sub-env. Evaluate them with :func:`~sb3_meta.common.evaluation.evaluate_adaptation`.
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import torch as th
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.type_aliases import MaybeCallback
from torch import nn

from sb3_meta.common.policies import MetaActorCriticPolicy
from sb3_meta.common.sb3_policies import DEFAULT_ADAPT_LR, meta_policy_from_sb3
from sb3_meta.common.utils import check_int
from sb3_meta.envs.builders import as_task_env, env_horizon, make_mixture_vec_env
from sb3_meta.maml.maml import FOMAML

__all__ = [
    "BASELINE_POLICY_KWARGS",
    "as_meta_model",
    "make_mixture_vec_env",
    "make_random",
    "train_oracle",
    "train_pretrained",
]

#: The meta-learners' actor (two hidden layers of 100 ReLU units) plus a critic of the same size.
BASELINE_POLICY_KWARGS: dict[str, Any] = dict(net_arch=dict(pi=[100, 100], vf=[100, 100]), activation_fn=nn.ReLU)


def _algo_class(algo: str) -> type[BaseAlgorithm]:
    if algo == "ppo":
        return PPO
    if algo == "a2c":
        return A2C
    if algo == "trpo":
        try:
            from sb3_contrib import TRPO
        except ImportError as e:  # pragma: no cover - sb3-contrib is a dependency
            raise ImportError("algo='trpo' needs sb3-contrib: pip install sb3-contrib") from e
        return TRPO
    raise ValueError(f"algo must be 'ppo', 'trpo' or 'a2c', got {algo!r}")


def _default_kwargs(algo: str, rollout_size: int) -> dict[str, Any]:
    """Settings that keep one update cheap on a large rollout (a few dozen gradient steps, not thousands)."""
    # the largest minibatch of at least 2 and at most a quarter of the rollout that divides it (SB3 warns about a
    # truncated minibatch), else the whole rollout
    divisors = (rollout_size // d for d in range(4, rollout_size // 2 + 1) if rollout_size % d == 0)
    minibatch = next(divisors, rollout_size)
    if algo == "ppo":
        return dict(batch_size=minibatch, n_epochs=10)
    if algo == "trpo":
        return dict(batch_size=minibatch, n_critic_updates=10)
    return {}


def _make_model(
    env: gym.Env | str,
    algo: str,
    seed: int | None,
    oracle: bool,
    n_envs: int,
    n_steps: int | None,
    policy_kwargs: dict[str, Any] | None,
    device: str,
    verbose: int,
    tensorboard_log: str | None,
    algo_kwargs: dict[str, Any],
) -> BaseAlgorithm:
    cls = _algo_class(algo)
    env = as_task_env(env, "the baselines")
    if n_steps is None:
        n_steps = env_horizon(env) or 2048
    n_steps = check_int("n_steps", n_steps, 1)
    venv = make_mixture_vec_env(env, n_envs, seed=seed, oracle=oracle)
    kwargs = {**_default_kwargs(algo, n_steps * venv.num_envs), "n_steps": n_steps, **algo_kwargs}
    return cls(
        "MlpPolicy",
        venv,
        policy_kwargs=copy.deepcopy(BASELINE_POLICY_KWARGS if policy_kwargs is None else policy_kwargs),
        seed=seed,
        device=device,
        verbose=verbose,
        tensorboard_log=tensorboard_log,
        **kwargs,
    )


def train_pretrained(
    env: gym.Env | str,
    total_timesteps: int,
    algo: str = "ppo",
    seed: int | None = 0,
    n_envs: int = 64,
    n_steps: int | None = None,
    policy_kwargs: dict[str, Any] | None = None,
    callback: MaybeCallback = None,
    device: str = "cpu",
    verbose: int = 0,
    tensorboard_log: str | None = None,
    progress_bar: bool = False,
    **algo_kwargs: Any,
) -> BaseAlgorithm:
    """Train an SB3 policy on the task mixture: the *pretrained* baseline of the MAML paper.

    :param env: the task distribution (or a registered id)
    :param total_timesteps: env steps to train for (give the meta-learners' budget to compare like with like)
    :param algo: ``"ppo"``, ``"trpo"`` (sb3-contrib) or ``"a2c"``
    :param seed: seed of the model and of the sub-envs
    :param n_envs: sub-envs of the batched VecEnv
    :param n_steps: steps per sub-env and rollout (default: the episode horizon, one episode per sub-env)
    :param policy_kwargs: policy arguments (default :data:`BASELINE_POLICY_KWARGS`: the meta-learners' actor)
    :param callback: SB3 callback(s)
    :param device: torch device
    :param verbose: SB3 verbosity
    :param tensorboard_log: TensorBoard log directory
    :param progress_bar: show a progress bar
    :param algo_kwargs: other arguments of the SB3 class (override the defaults: a minibatch of a quarter of the
        rollout, so that an update stays cheap)
    :return: the trained model
    """
    total_timesteps = check_int("total_timesteps", total_timesteps, 1)
    model = _make_model(env, algo, seed, False, n_envs, n_steps, policy_kwargs, device, verbose, tensorboard_log, algo_kwargs)
    return model.learn(total_timesteps, callback=callback, progress_bar=progress_bar)


def make_random(
    env: gym.Env | str,
    seed: int | None = 0,
    algo: str = "ppo",
    policy_kwargs: dict[str, Any] | None = None,
    device: str = "cpu",
) -> BaseAlgorithm:
    """A freshly initialised policy of the same class and architecture as :func:`train_pretrained`'s: the
    *random* baseline of the MAML paper.

    :param env: the task distribution (or a registered id)
    :param seed: seed of the initialisation
    :param algo: ``"ppo"``, ``"trpo"`` or ``"a2c"``
    :param policy_kwargs: policy arguments (default :data:`BASELINE_POLICY_KWARGS`)
    :param device: torch device
    :return: the untrained model
    """
    return _make_model(env, algo, seed, False, 1, None, policy_kwargs, device, 0, None, {})


def train_oracle(
    env: gym.Env | str,
    total_timesteps: int,
    algo: str = "ppo",
    seed: int | None = 0,
    n_envs: int = 64,
    n_steps: int | None = None,
    policy_kwargs: dict[str, Any] | None = None,
    callback: MaybeCallback = None,
    device: str = "cpu",
    verbose: int = 0,
    tensorboard_log: str | None = None,
    progress_bar: bool = False,
    **algo_kwargs: Any,
) -> BaseAlgorithm:
    """Train an SB3 policy that sees the task (oracle observations) on the task mixture: the *oracle* baseline.

    Evaluate it with ``evaluate_adaptation(model, make_oracle_env(env), n_steps=0, tasks=...)``.
    Arguments as :func:`train_pretrained`.

    :return: the trained model (its observation space is the oracle's)
    """
    total_timesteps = check_int("total_timesteps", total_timesteps, 1)
    model = _make_model(env, algo, seed, True, n_envs, n_steps, policy_kwargs, device, verbose, tensorboard_log, algo_kwargs)
    return model.learn(total_timesteps, callback=callback, progress_bar=progress_bar)


def as_meta_model(model: BaseAlgorithm, max_episode_steps: int | None = None) -> FOMAML:
    """A FOMAML holding a copy of ``model``'s policy, to adapt it with the meta-learners' VPG step (``adapt_tasks``).

    An sb3_meta meta-learner is returned as it is. An SB3 on-policy model (PPO, A2C, TRPO) with a Gaussian or
    categorical ``ActorCriticPolicy`` is copied (:func:`~sb3_meta.common.sb3_policies.meta_policy_from_sb3`) into
    a FOMAML with ``meta_batch_size=fast_batch_size=1`` and no env; the VPG step then uses the meta-learners'
    defaults: ``gamma=0.99``, ``gae_lambda=1.0``, normalised advantages, a linear feature baseline, α = 0.1.
    Neither ``model`` nor any global RNG is changed. (:func:`~sb3_meta.common.evaluation.evaluate_adaptation`
    takes SB3 models directly.)

    :param model: the model
    :param max_episode_steps: episode horizon of the copy (needed for SB3 models, which have no task env)
    :return: the meta-learner
    """
    if isinstance(getattr(model, "policy", None), MetaActorCriticPolicy) and callable(getattr(model, "inner_loop", None)):
        return model  # type: ignore[return-value]  # a meta-learner already
    if not isinstance(model, BaseAlgorithm):
        raise ValueError(f"Expected an SB3 model (PPO, A2C, TRPO) or an sb3_meta meta-learner, got {type(model).__name__}")
    meta_policy = meta_policy_from_sb3(model)
    device = meta_policy.device
    with th.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # weight init draws from torch's RNG
        adapter = FOMAML(
            type(meta_policy),
            None,
            meta_batch_size=1,
            fast_batch_size=1,
            inner_lr=DEFAULT_ADAPT_LR,
            max_episode_steps=max_episode_steps,
            device=device,
            _init_setup_model=False,
        )
        adapter.observation_space, adapter.action_space = meta_policy.observation_space, meta_policy.action_space
        adapter._setup_lr_schedule()
        adapter.policy = meta_policy
    return adapter
