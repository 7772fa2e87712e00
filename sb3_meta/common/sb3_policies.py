"""SB3 on-policy models (PPO, A2C, sb3-contrib TRPO) as meta-policies, so that the pretrained and random
baselines adapt with exactly the meta-learners' VPG step.

A Gaussian or categorical ``ActorCriticPolicy`` is copied, parameter for parameter, into a
:class:`~sb3_meta.common.policies.MetaActorCriticPolicy` of the same architecture; the copy is checked to give
the same action distributions.
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.distributions import CategoricalDistribution, DiagGaussianDistribution
from stable_baselines3.common.policies import ActorCriticPolicy

from sb3_meta.common.policies import MetaActorCriticPolicy

__all__ = ["DEFAULT_ADAPT_LR", "check_sb3_policy", "meta_policy_from_sb3"]

#: Step size of the test-time VPG step for models without an ``inner_lr`` (PPO, A2C, TRPO): the meta-learners' default.
DEFAULT_ADAPT_LR = 0.1


def check_sb3_policy(model: BaseAlgorithm) -> ActorCriticPolicy:
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


def meta_policy_from_sb3(model: BaseAlgorithm) -> MetaActorCriticPolicy:
    """A :class:`MetaActorCriticPolicy` with the architecture and parameters of ``model``'s policy.

    Neither ``model`` nor any global RNG is changed (weight initialisation draws on a forked torch RNG).

    :param model: an SB3 on-policy model with a Gaussian (no gSDE) or categorical ``ActorCriticPolicy``
    :return: the meta-policy, in evaluation mode
    """
    policy = check_sb3_policy(model)
    kwargs = policy._get_constructor_parameters()
    observation_space, action_space = kwargs.pop("observation_space"), kwargs.pop("action_space")
    kwargs.pop("lr_schedule", None)
    kwargs["share_features_extractor"] = policy.share_features_extractor
    device = policy.device
    with th.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        meta_policy = MetaActorCriticPolicy(observation_space, action_space, lambda _: DEFAULT_ADAPT_LR, **kwargs)
    meta_policy = meta_policy.to(device)
    meta_policy.load_state_dict(policy.state_dict())
    meta_policy.set_training_mode(False)
    _check_same_distribution(policy, meta_policy)
    return meta_policy
