"""The meta-policy: SB3's ``ActorCriticPolicy`` plus a *functional* view of its actor.

Meta-learning evaluates one network under many parameter sets at once (one adapted set per task), so the
actor is also exposed as pure functions of an explicit parameter dict, ``params -> distribution``, that
``torch.func.vmap`` can batch over tasks and ``torch.func.grad`` can differentiate (twice, for MAML).
Log-probabilities and KL divergences are written out in closed form so they stay vmap-safe.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch as th
import torch.utils._pytree as _pytree
from gymnasium import spaces
from stable_baselines3.common.distributions import CategoricalDistribution, DiagGaussianDistribution
from stable_baselines3.common.policies import ActorCriticPolicy, BaseModel
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.common.type_aliases import Schedule
from torch import nn

__all__ = ["DistParams", "MetaActorCriticPolicy", "MlpPolicy", "ParameterSnapshot", "Params"]

Params = dict[str, th.Tensor]


class DistParams:
    """Parameters of the action distribution: ``(mean, log_std)`` for Box, ``(logits, None)`` for Discrete.

    A registered pytree node rather than a NamedTuple: torch's pytree treats every namedtuple generically, with
    a ``None`` field as a leaf, and ``torch.func.vmap`` rejects such outputs ("must only return Tensors"), so
    categorical policies failed wherever a DistParams crossed a vmap boundary. Here a missing log-std is part of
    the structure. Unpacks like the tuple ``(loc, log_std)``.
    """

    __slots__ = ("loc", "log_std")

    def __init__(self, loc: th.Tensor, log_std: th.Tensor | None = None) -> None:
        self.loc = loc
        self.log_std = log_std

    def __iter__(self) -> Iterator[th.Tensor | None]:
        return iter((self.loc, self.log_std))

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> th.Tensor | None:
        return (self.loc, self.log_std)[index]

    def __repr__(self) -> str:
        return f"DistParams(loc={self.loc!r}, log_std={self.log_std!r})"


def _dist_params_flatten(dist: DistParams) -> tuple[list[th.Tensor], bool]:
    has_log_std = dist.log_std is not None
    return ([dist.loc, dist.log_std] if has_log_std else [dist.loc]), has_log_std  # type: ignore[list-item]


def _dist_params_unflatten(children: Any, has_log_std: bool) -> DistParams:
    children = list(children)
    return DistParams(children[0], children[1] if has_log_std else None)


_pytree.register_pytree_node(
    DistParams,
    _dist_params_flatten,  # type: ignore[arg-type]
    _dist_params_unflatten,
    serialized_type_name="sb3_meta.common.policies.DistParams",
)


#: Activations applied element by element: their Jacobian is the diagonal σ'(z), fixed once z is known.
ELEMENTWISE_ACTIVATIONS = (
    nn.Tanh,
    nn.ReLU,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Softplus,
    nn.Hardtanh,
    nn.Identity,
)


class ParameterSnapshot:
    """The parameters of a module as they are now: for every name (aliases of shared submodules included) the module
    that holds it and the parameter object, and one copy of each parameter's values."""

    def __init__(self, module: nn.Module) -> None:
        self.places: list[tuple[nn.Module, str, nn.Parameter]] = []
        for name, param in module.named_parameters(remove_duplicate=False):
            owner, _, leaf = name.rpartition(".")
            self.places.append((module.get_submodule(owner), leaf, param))
        self.values = {id(param): param.detach().clone() for _, _, param in self.places}

    def restore(self, module: nn.Module) -> None:
        with th.no_grad():
            for owner, leaf, param in self.places:
                owner._parameters[leaf] = param  # the parameter object itself, whatever the name holds now
            for _, _, param in self.places:
                param.copy_(self.values[id(param)])


class _ActorHead(nn.Module):
    """Wraps the policy so that ``functional_call`` runs the actor only (parameter names keep a ``policy.`` prefix)."""

    def __init__(self, policy: MetaActorCriticPolicy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, obs: th.Tensor) -> DistParams:
        return self.policy.actor_dist_params(obs)


class MetaActorCriticPolicy(ActorCriticPolicy):
    """SB3 actor-critic policy used as a meta-policy (Gaussian with state-independent log-std, or categorical).

    Defaults follow the MAML RL experiments: two hidden layers of 100 ReLU units. The value head is kept
    (tiny) for SB3 compatibility but is not trained: the meta-learners use a linear feature baseline.
    Parameters that define the actor (features extractor, policy MLP, action head, log-std) are the
    *meta-parameters*; :meth:`actor_parameters` returns them by name.

    :param observation_space: Observation space
    :param action_space: Action space (Box or Discrete)
    :param lr_schedule: Learning rate schedule (unused by the meta-learners' own updates)
    :param net_arch: hidden layers of the actor (and of the unused critic); default ``dict(pi=[100, 100], vf=[])``
    :param activation_fn: Activation function (default ReLU)
    :param kwargs: passed to :class:`stable_baselines3.common.policies.ActorCriticPolicy`
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        **kwargs: Any,
    ) -> None:
        if not isinstance(action_space, (spaces.Box, spaces.Discrete)):
            raise ValueError(f"Meta-policies support Box and Discrete action spaces, got {action_space}")
        if kwargs.get("use_sde"):
            raise ValueError("gSDE is not supported by the meta-learners")
        if net_arch is None:
            net_arch = dict(pi=[100, 100], vf=[])
        super().__init__(
            observation_space, action_space, lr_schedule, net_arch=net_arch, activation_fn=activation_fn, **kwargs
        )
        # Not registered as a submodule (it holds the policy itself: a registered one would be a cycle).
        self.__dict__["_actor_head"] = _ActorHead(self)

    # --- functional actor ---------------------------------------------------------------------------
    def actor_parameter_names(self) -> list[str]:
        """Names (as in ``named_parameters``) of the parameters that define the action distribution."""
        names = []
        for name, _ in self.named_parameters():
            if name.startswith(("value_net.", "mlp_extractor.value_net.", "vf_features_extractor.")):
                continue
            names.append(name)
        return names

    def actor_parameters(self) -> Params:
        """The meta-parameters θ, by name (the live tensors)."""
        named = dict(self.named_parameters())
        return {name: named[name] for name in self.actor_parameter_names()}

    def parameter_snapshot(self) -> ParameterSnapshot:
        """Every parameter of the policy (its object, where each name holds it, and a copy of its values), for
        :meth:`restore_parameters`."""
        return ParameterSnapshot(self)

    def restore_parameters(self, snapshot: ParameterSnapshot) -> None:
        """Put back what :meth:`parameter_snapshot` took: each name holds its parameter object again, with the values
        of then. This also repairs a policy interrupted inside ``torch.func.functional_call`` (e.g. by Ctrl-C), which
        can leave a name holding the call's tensor instead of the parameter."""
        snapshot.restore(self)

    def actor_features(self, obs: th.Tensor) -> th.Tensor:
        """The actor's features of ``obs``: preprocessing and ``pi_features_extractor``, shared with the critic or not.

        (SB3's ``ActorCriticPolicy.extract_features`` returns the actor's and the critic's features as a pair when
        ``share_features_extractor=False``; the meta-policies only need the actor's.)
        """
        # SB3 types extract_features as Tensor | tuple and nn.Module attributes as Tensor | Module
        return BaseModel.extract_features(self, obs, self.pi_features_extractor)  # type: ignore[arg-type, return-value]

    def actor_dist_params(self, obs: th.Tensor) -> DistParams:
        """Distribution parameters for a batch of observations, using the module's own parameters."""
        # SB3 preprocessing casts observations to float32; follow the parameters' dtype (float64 in gradient checks)
        features = self.actor_features(obs).to(self.action_net.weight.dtype)  # type: ignore[arg-type]
        latent_pi = self.mlp_extractor.forward_actor(features)
        out = self.action_net(latent_pi)
        if isinstance(self.action_dist, DiagGaussianDistribution):
            return DistParams(out, self.log_std)
        if isinstance(self.action_dist, CategoricalDistribution):
            return DistParams(out, None)
        raise ValueError(f"Unsupported action distribution {type(self.action_dist).__name__}")

    def functional_dist_params(self, params: Params, obs: th.Tensor) -> DistParams:
        """``actor_dist_params`` under the parameters ``params`` (a dict as from :meth:`actor_parameters`)."""
        # set through __dict__ (see __init__); nn.Module.__getattr__ is typed Tensor | Module
        # tie_weights=False: with a shared features extractor SB3 reaches one module under two names
        # (features_extractor, pi_features_extractor); torch's tying would set its parameters twice and restore them
        # wrongly, leaving the given tensors in the policy. One name per parameter is enough: the module is shared.
        named = {f"policy.{k}": v for k, v in params.items()}
        return th.func.functional_call(self._actor_head, named, (obs,), strict=False, tie_weights=False)  # type: ignore[arg-type]

    def actor_tangent_fn(
        self, params: Params, obs: th.Tensor, reference: DistParams | None = None
    ) -> Callable[[Params], DistParams] | None:
        """Forward-mode derivative u ↦ (∂dist/∂θ_i) u_i of the actor at stacked parameters, with the forward pass cached.

        ``torch.func.jvp`` recomputes the forward pass (matmuls and activations) at every call; the Fisher-vector
        products of a TRPO step all linearise at the same point. For the plain MLP actor (flattened observations,
        Linear layers with element-wise activations, a Linear action head) this records each layer's input and
        activation slope σ'(z) once, so a call is two batched matmuls per layer and one product with σ'(z).

        :param params: stacked parameters (leading task dimension K), as from :meth:`actor_parameters`
        :param obs: observations, shape (K, N, *obs_shape)
        :param reference: ``vmap(functional_dist_params)(params, obs)`` if the caller has it (else computed here)
        :return: the tangent map (u stacked like ``params``), or None when the actor is not such an MLP (use
            ``torch.func.jvp`` then) or the cached forward pass does not reproduce :meth:`functional_dist_params`
        """
        extractor = self.pi_features_extractor
        if not isinstance(extractor, FlattenExtractor) or any(True for _ in extractor.parameters()):
            return None
        policy_net = getattr(self.mlp_extractor, "policy_net", None)
        if not isinstance(policy_net, nn.Sequential):
            return None
        modules = [*policy_net, self.action_net]
        prefix = {id(m): f"mlp_extractor.policy_net.{i}" for i, m in enumerate(policy_net)}
        prefix[id(self.action_net)] = "action_net"
        layers: list[tuple[str, str | None, nn.Module | None]] = []  # (weight, bias, activation after the layer)
        for module in modules:
            if isinstance(module, nn.Linear):
                name = prefix[id(module)]
                layers.append((f"{name}.weight", f"{name}.bias" if module.bias is not None else None, None))
            elif isinstance(module, ELEMENTWISE_ACTIVATIONS) and layers and layers[-1][2] is None:
                layers[-1] = (layers[-1][0], layers[-1][1], module)
            else:
                return None
        if not isinstance(modules[-1], nn.Linear) or any(w not in params for w, _, _ in layers):
            return None

        n_tasks, n_samples = obs.shape[:2]
        weight_dtype = params[layers[0][0]].dtype
        with th.no_grad():
            features = self.actor_features(obs.reshape(n_tasks * n_samples, *obs.shape[2:]))
            x = features.to(weight_dtype).reshape(n_tasks, n_samples, -1)
            cache: list[tuple[th.Tensor, th.Tensor | None]] = []  # (layer input, σ'(z) or None)
            for weight, bias, activation in layers:
                z = th.bmm(x, params[weight].transpose(1, 2))
                if bias is not None:
                    z = z + params[bias].unsqueeze(1)
                slope = None if activation is None else th.func.jvp(activation, (z,), (th.ones_like(z),))[1]
                cache.append((x, slope))
                x = z if activation is None else activation(z)
            if reference is None:
                reference = th.func.vmap(self.functional_dist_params)({k: v.detach() for k, v in params.items()}, obs)
            if not th.allclose(x, reference.loc.detach(), rtol=1e-5, atol=1e-6):
                return None

        has_log_std = reference.log_std is not None

        def tangent(u: Params) -> DistParams:
            dx: th.Tensor | None = None  # the observations have no tangent
            for (weight, bias, _), (x_in, slope) in zip(layers, cache):
                dz = th.bmm(x_in, u[weight].transpose(1, 2))  # dz = x dWᵀ + db + dx Wᵀ
                if bias is not None:
                    dz = dz + u[bias].unsqueeze(1)
                if dx is not None:
                    dz = dz + th.bmm(dx, params[weight].transpose(1, 2))
                dx = dz if slope is None else dz * slope
            assert dx is not None
            return DistParams(dx, u["log_std"] if has_log_std else None)

        return tangent

    @property
    def is_discrete(self) -> bool:
        return isinstance(self.action_dist, CategoricalDistribution)

    # --- closed-form distribution maths (vmap-safe) --------------------------------------------------
    def log_prob(self, dist: DistParams, actions: th.Tensor) -> th.Tensor:
        """log π(a|s), summed over action dimensions; shape = batch shape."""
        if self.is_discrete:
            log_p = th.log_softmax(dist.loc, dim=-1)
            return th.gather(log_p, -1, actions.long().unsqueeze(-1)).squeeze(-1)
        assert dist.log_std is not None
        z = (actions - dist.loc) * th.exp(-dist.log_std)
        return (-0.5 * z.pow(2) - dist.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def kl(self, old: DistParams, new: DistParams) -> th.Tensor:
        """KL(old ‖ new) per sample, summed over action dimensions."""
        if self.is_discrete:
            log_p_old = th.log_softmax(old.loc, dim=-1)
            log_p_new = th.log_softmax(new.loc, dim=-1)
            return (log_p_old.exp() * (log_p_old - log_p_new)).sum(-1)
        assert old.log_std is not None and new.log_std is not None
        var_old, var_new = th.exp(2 * old.log_std), th.exp(2 * new.log_std)
        return (new.log_std - old.log_std + (var_old + (old.loc - new.loc).pow(2)) / (2 * var_new) - 0.5).sum(-1)

    def fisher_product(self, dist: DistParams, tangent: DistParams, weights: th.Tensor) -> DistParams:
        """∇²_{new} KL(dist ‖ new)|_{new=dist} applied to a tangent of the distribution parameters.

        With J = ∂(distribution parameters)/∂θ, the Fisher-vector product is Jᵀ (this) J v: the exact KL
        Hessian at the current parameters, at the cost of one forward-mode and one reverse-mode pass.
        ``weights`` (per sample) are those of the mean over samples.
        """
        if self.is_discrete:
            p = th.softmax(dist.loc, dim=-1)
            u = tangent.loc
            return DistParams((p * u - p * (p * u).sum(-1, keepdim=True)) * weights.unsqueeze(-1), None)
        assert dist.log_std is not None and tangent.log_std is not None
        loc = tangent.loc * th.exp(-2 * dist.log_std).unsqueeze(-2) * weights.unsqueeze(-1)
        # d²KL/d(log σ)² = 2 per action dimension (state independent), averaged over samples
        log_std = 2 * tangent.log_std * weights.sum(-1, keepdim=True)
        return DistParams(loc, log_std)

    def sample(self, dist: DistParams, deterministic: bool = False) -> th.Tensor:
        """Draw actions (torch's global RNG); the mode when ``deterministic``."""
        if self.is_discrete:
            if deterministic:
                return dist.loc.argmax(-1)
            return th.distributions.Categorical(logits=dist.loc).sample()
        if deterministic:
            return dist.loc
        assert dist.log_std is not None
        return dist.loc + th.exp(dist.log_std) * th.randn_like(dist.loc)


MlpPolicy = MetaActorCriticPolicy
