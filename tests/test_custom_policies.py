"""Policies with a features extractor that has parameters (SB3's custom-extractor recipe) meta-learn and adapt.

SB3 reaches a shared extractor under two names (``features_extractor`` and ``pi_features_extractor``); the
functional actor must run the given parameters through it and leave the module's own parameters untouched.
"""

from __future__ import annotations

import pytest
import torch as th
from conftest import params_equal, point_mass, small_kwargs
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from sb3_meta import FOMAML, MAML, Reptile


class LinearExtractor(BaseFeaturesExtractor):
    """One Linear layer and a tanh: a features extractor with parameters."""

    def __init__(self, observation_space, features_dim: int = 4) -> None:
        super().__init__(observation_space, features_dim)
        self.linear = th.nn.Linear(observation_space.shape[0], features_dim)

    def forward(self, observations: th.Tensor) -> th.Tensor:
        # SB3's preprocessing gives float32 observations; follow the weights' dtype (float64 in the gradient check)
        return th.tanh(self.linear(observations.to(self.linear.weight.dtype)))


def policy_kwargs(share: bool) -> dict:
    return dict(net_arch=[8], features_extractor_class=LinearExtractor, share_features_extractor=share)


@pytest.mark.parametrize("share", [True, False])
def test_functional_actor_uses_the_given_extractor_parameters_and_leaves_the_module_alone(share):
    model = FOMAML("MlpPolicy", point_mass(), **small_kwargs(policy_kwargs=policy_kwargs(share)))
    policy = model.policy.double()
    theta = {k: v.detach().clone() for k, v in policy.actor_parameters().items()}
    extractor = next(name for name in theta if name.endswith("features_extractor.linear.weight"))
    moved = {**theta, extractor: theta[extractor] + 0.5}
    obs = th.randn(5, 2, dtype=th.float64)
    mean = policy.functional_dist_params(moved, obs).loc
    assert params_equal(policy.actor_parameters(), theta)  # the module keeps its own parameters
    with th.no_grad():
        policy.get_parameter(extractor).add_(0.5)  # the same change made in place
        expected = policy.actor_dist_params(obs).loc
    th.testing.assert_close(mean, expected, rtol=0, atol=0)


def test_extractor_gradient_matches_finite_differences():
    model = FOMAML("MlpPolicy", point_mass(), **small_kwargs(policy_kwargs=policy_kwargs(True)))
    policy = model.policy.double()
    theta = {k: v.detach().clone() for k, v in policy.actor_parameters().items()}
    name = "features_extractor.linear.weight"
    obs = th.randn(7, 2, dtype=th.float64)

    def loss(weight: th.Tensor) -> th.Tensor:
        return policy.functional_dist_params({**theta, name: weight}, obs).loc.square().sum()

    weight = theta[name].clone().requires_grad_(True)
    (grad,) = th.autograd.grad(loss(weight), weight)
    eps = 1e-6
    numeric = th.zeros_like(grad)
    for i in range(weight.numel()):
        step = th.zeros_like(weight).view(-1)
        step[i] = eps
        step = step.view_as(weight)
        numeric.view(-1)[i] = (loss(theta[name] + step) - loss(theta[name] - step)) / (2 * eps)
    th.testing.assert_close(grad, numeric, rtol=1e-6, atol=1e-8)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("cls", [FOMAML, MAML, Reptile])
@pytest.mark.parametrize("share", [True, False])
def test_meta_learners_train_and_adapt_the_extractor(cls, share):
    extra = dict(cg_max_steps=3, line_search_max_iter=5) if cls is not Reptile else {}
    model = cls("MlpPolicy", point_mass(), **small_kwargs(policy_kwargs=policy_kwargs(share)), **extra)
    before = {k: v.detach().clone() for k, v in model.meta_parameters().items()}
    model.learn(1)
    after = model.meta_parameters()
    name = next(n for n in after if n.endswith("features_extractor.linear.weight"))
    assert not th.equal(after[name], before[name])  # the outer step moved the extractor
    adapted = model.adapt(point_mass(seed=9).sample_tasks(1)[0], steps=1, seed=0, n_episodes=2)
    assert not th.equal(adapted.meta_parameters()[name], after[name])  # so did the inner step
    assert params_equal(model.meta_parameters(), after)
