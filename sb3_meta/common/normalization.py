"""SB3's ``VecNormalize`` for meta-learners: the running statistics belong to the model.

A meta-learner trained on ``VecNormalize(task_venv)`` sees normalised observations (and rewards) in every sampling
pass, so adaptation must see the same transformation, also on the fresh VecEnvs that ``adapt`` and
``evaluate_adaptation`` sample and after ``load`` without an env. :class:`NormalizationState` is a copy of a
``VecNormalize``'s statistics and settings: the model saves it in its checkpoints (as JSON), puts it back into the
``VecNormalize`` it is loaded with (so that training resumes bit for bit, also from a checkpoint written during an
iteration, and a ``VecNormalize.load``-ed env of another time cannot desynchronise parameters and statistics), and
wraps adaptation VecEnvs in a frozen ``VecNormalize`` with it (``training=False``: adapting never moves them).

Returns are reported in the env's own reward scale (``VecNormalize.get_original_reward``), as SB3's ``Monitor``
reports them; the inner steps use the normalised rewards, as training did.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, cast

import numpy as np
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecNormalize

__all__ = [
    "CountedStepsNormalization",
    "NormalizationState",
    "find_vec_normalize",
    "model_normalization",
    "normalized_vec_env",
]

_SETTINGS = ("norm_obs", "norm_reward", "clip_obs", "clip_reward", "gamma", "epsilon")


def find_vec_normalize(venv: VecEnv | None) -> VecNormalize | None:
    """The outermost ``VecNormalize`` in ``venv``'s chain of VecEnv wrappers, or None."""
    while isinstance(venv, VecEnvWrapper):
        if isinstance(venv, VecNormalize):
            return venv
        venv = venv.venv
    return None


@dataclasses.dataclass
class NormalizationState:
    """The statistics (observation and return running mean/variance) and settings of a ``VecNormalize``.

    :param norm_obs: whether observations are normalised
    :param norm_reward: whether rewards are scaled by the running std of the discounted return
    :param clip_obs: observations are clipped to ``[-clip_obs, clip_obs]`` after normalisation
    :param clip_reward: rewards are clipped to ``[-clip_reward, clip_reward]`` after scaling
    :param gamma: discount of the running return whose std scales the rewards
    :param epsilon: added to the variances
    :param obs_rms: running mean/variance of the observations (None when ``norm_obs`` is False)
    :param ret_rms: running mean/variance of the discounted returns
    """

    norm_obs: bool
    norm_reward: bool
    clip_obs: float
    clip_reward: float
    gamma: float
    epsilon: float
    obs_rms: RunningMeanStd | None
    ret_rms: RunningMeanStd

    @classmethod
    def of(cls, vec_normalize: VecNormalize) -> NormalizationState:
        """A copy of ``vec_normalize``'s statistics and settings (later updates of it do not change the copy)."""
        if isinstance(getattr(vec_normalize, "obs_rms", None), dict):
            raise ValueError("VecNormalize of dict observations is not supported (meta-policies take Box observations)")
        settings = {name: getattr(vec_normalize, name) for name in _SETTINGS}
        obs_rms = cast(RunningMeanStd, copy.deepcopy(vec_normalize.obs_rms)) if vec_normalize.norm_obs else None
        return cls(**settings, obs_rms=obs_rms, ret_rms=copy.deepcopy(vec_normalize.ret_rms))

    def check_fits(self, vec_normalize: VecNormalize, where: str = "the VecNormalize") -> None:
        """Raise ``ValueError`` when the observation statistics do not fit ``vec_normalize``'s observations."""
        shape = tuple(vec_normalize.observation_space.shape or ())
        if self.obs_rms is not None and tuple(self.obs_rms.mean.shape) != shape:
            raise ValueError(
                f"The model's observation statistics have shape {self.obs_rms.mean.shape}, but {where} has "
                f"observations of shape {shape}"
            )

    def apply_to(self, vec_normalize: VecNormalize) -> None:
        """Put these statistics and settings into ``vec_normalize`` (copies; its ``training`` flag is kept).

        :raises ValueError: when the observation statistics do not fit its observation space
        """
        self.check_fits(vec_normalize)
        for name in _SETTINGS:
            setattr(vec_normalize, name, getattr(self, name))
        if self.obs_rms is not None:
            vec_normalize.obs_rms = copy.deepcopy(self.obs_rms)  # type: ignore[arg-type]  # (Box observations)
        vec_normalize.ret_rms = copy.deepcopy(self.ret_rms)

    def frozen(self, venv: VecEnv) -> VecNormalize:
        """``venv`` in a ``VecNormalize`` with these statistics that never updates them (``training=False``)."""
        wrapper = VecNormalize(venv, training=False, **{name: getattr(self, name) for name in _SETTINGS})
        self.apply_to(wrapper)
        return wrapper

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types only (float64 values round-trip exactly through JSON's repr)."""

        def rms(r: RunningMeanStd | None) -> dict[str, Any] | None:
            if r is None:
                return None
            return {
                "mean": np.asarray(r.mean, np.float64).tolist(),
                "var": np.asarray(r.var, np.float64).tolist(),
                "count": float(r.count),
            }

        return {
            **{
                name: (bool(v) if isinstance(v, (bool, np.bool_)) else float(v))
                for name in _SETTINGS
                for v in [getattr(self, name)]
            },
            "obs_rms": rms(self.obs_rms),
            "ret_rms": rms(self.ret_rms),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NormalizationState:
        """The inverse of :meth:`to_json`.

        :raises ValueError: when an entry is missing or malformed
        """

        def rms(d: dict[str, Any] | None) -> RunningMeanStd | None:
            if d is None:
                return None
            mean = np.asarray(d["mean"], np.float64)
            r = RunningMeanStd(shape=mean.shape)
            r.mean, r.var, r.count = mean, np.asarray(d["var"], np.float64).reshape(mean.shape), float(d["count"])
            return r

        try:
            ret_rms = rms(data["ret_rms"])
            if ret_rms is None:
                raise KeyError("ret_rms")
            return cls(**{name: data[name] for name in _SETTINGS}, obs_rms=rms(data["obs_rms"]), ret_rms=ret_rms)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"The checkpoint's VecNormalize statistics are incomplete or malformed ({e!r})") from e


def normalized_vec_env(venv: VecEnv, state: NormalizationState | None) -> VecEnv:
    """``venv`` in a frozen ``VecNormalize`` with ``state`` (``venv`` itself without one)."""
    return venv if state is None else state.frozen(venv)


def model_normalization(model: Any) -> NormalizationState | None:
    """The normalisation an SB3 model (or meta-learner) was trained with, None without ``VecNormalize``.

    A meta-learner's own (its ``normalization``, kept through ``load`` without an env); for an SB3 model, that of
    the ``VecNormalize`` of its env (SB3 models do not save it: load them with their ``VecNormalize.load``-ed env).
    """
    own = getattr(model, "normalization", None)
    if isinstance(own, NormalizationState):
        return own
    vec_normalize = model.get_vec_normalize_env()
    return None if vec_normalize is None else NormalizationState.of(vec_normalize)


class CountedStepsNormalization:
    """During a sampling pass, a training ``VecNormalize`` in ``venv`` learns from the steps the batch keeps only.

    SB3's ``VecNormalize`` updates its statistics with every sub-env at every step. In a pass, the sub-envs whose
    episode has ended are padding (left idle by the batched VecEnvs, auto-reset and run by SB3's), which training
    discards; counted, they would weigh end states (Ant lying down) or unused episodes in the statistics. So
    :meth:`before_step` keeps the statistics, and :meth:`after_step` puts them back and makes SB3's update
    (statistics first, then normalisation with them) on the sub-envs whose step counts. The ``VecNormalize`` stays
    in training mode throughout, as callbacks (``CheckpointCallback(save_vecnormalize=True)``) see and save it.
    The reset that starts the pass is SB3's own (every sub-env starts an episode). Without a training
    ``VecNormalize``, or with a wrapper above it that changes observations, nothing changes.

    :param venv: the VecEnv a pass samples
    """

    def __init__(self, venv: VecEnv) -> None:
        vec_normalize = find_vec_normalize(venv)
        keeps_observations = vec_normalize is not None and venv.observation_space == vec_normalize.observation_space
        self.vec_normalize = vec_normalize if keeps_observations and vec_normalize.training else None  # type: ignore[union-attr]
        self._before: tuple[RunningMeanStd | None, RunningMeanStd, np.ndarray] | None = None

    def before_step(self) -> None:
        vec_normalize = self.vec_normalize
        if vec_normalize is not None:
            obs_rms = cast(RunningMeanStd, vec_normalize.obs_rms).copy() if vec_normalize.norm_obs else None
            # the returns too: the step zeroes those of the episodes it ends
            self._before = obs_rms, vec_normalize.ret_rms.copy(), vec_normalize.returns.copy()

    def after_step(self, counted: np.ndarray, obs: np.ndarray, rewards: np.ndarray, dones: np.ndarray) -> tuple[Any, Any]:
        """The step's observations and rewards, normalised with statistics updated by the ``counted`` sub-envs.

        :param counted: per sub-env, whether this step is part of its episode (not padding)
        """
        vec_normalize = self.vec_normalize
        if vec_normalize is None:
            return obs, rewards
        assert self._before is not None
        obs_rms, ret_rms, returns_before = self._before
        vec_normalize.ret_rms = ret_rms  # the statistics as before the step: the update below replaces SB3's
        raw_obs, raw_rewards = np.asarray(vec_normalize.get_original_obs()), vec_normalize.get_original_reward()
        if obs_rms is not None:
            vec_normalize.obs_rms = obs_rms  # type: ignore[assignment]  # (Box observations)
            if counted.any():
                obs_rms.update(raw_obs[counted])
            obs = np.asarray(vec_normalize.normalize_obs(raw_obs))
        returns = np.where(counted, returns_before * vec_normalize.gamma + raw_rewards, returns_before)
        if counted.any():
            ret_rms.update(returns[counted])
        vec_normalize.returns = np.where(dones, 0.0, returns)
        return obs, vec_normalize.normalize_reward(raw_rewards)
