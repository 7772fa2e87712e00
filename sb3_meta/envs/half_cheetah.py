"""HalfCheetah goal-velocity and goal-direction task distributions (Finn et al., 2017, Sec. 5.3) on HalfCheetah-v5.

The MuJoCo model, observation and initial-state noise are gymnasium's ``HalfCheetahEnv`` (v5); the reward
is the original MAML code's (rllab's ``HalfCheetahEnvRand`` / ``HalfCheetahEnvRandDirec``). The cheetah
never terminates; episodes are truncated after ``max_episode_steps``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from gymnasium import utils
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

from sb3_meta.envs.core import TaskEnv
from sb3_meta.envs.mujoco_vec_env import (
    DirectionTask,
    MujocoTaskEnv,
    MujocoTaskVecEnv,
    VelocityTask,
    check_mujoco_arguments,
    init_kwargs,
)

__all__ = ["HalfCheetahDirTask", "HalfCheetahDirTasks", "HalfCheetahVelTask", "HalfCheetahVelTasks"]


@dataclasses.dataclass(frozen=True)
class HalfCheetahVelTask(VelocityTask):
    """A HalfCheetah goal-velocity task: the forward (x) velocity to run at, in m/s."""


@dataclasses.dataclass(frozen=True)
class HalfCheetahDirTask(DirectionTask):
    """A HalfCheetah goal-direction task: run forward (``direction=1``) or backward (``direction=-1``) along x."""


class _HalfCheetahTasks(MujocoTaskEnv, HalfCheetahEnv):
    """HalfCheetah-v5 with a task-dependent forward reward minus ``ctrl_cost_weight·Σa²``.

    ``x_velocity`` is the root's x displacement over the step divided by ``dt = frame_skip·0.01``, as
    HalfCheetah-v5 measures it.
    """

    velocity_body = None  # HalfCheetah-v5 measures the velocity with qpos[0]
    uses_contact_forces = False
    terminate_when_unhealthy = False

    def _init_cheetah(
        self,
        *,
        ctrl_cost_weight: float,
        max_episode_steps: int,
        reset_noise_scale: float,
        exclude_current_positions_from_observation: bool,
        frame_skip: int,
        xml_file: str,
        seed: int | None,
        sample_task_on_reset: bool,
        render_mode: str | None,
        width: int,
        height: int,
        ctor_kwargs: dict[str, Any],
    ) -> None:
        if not np.isfinite(ctrl_cost_weight):
            raise ValueError(f"ctrl_cost_weight must be finite, got {ctrl_cost_weight!r}")
        check_mujoco_arguments(
            type(self).__name__, max_episode_steps, frame_skip, reset_noise_scale, render_mode, self.metadata["render_modes"]
        )
        TaskEnv.__init__(self, seed=seed, sample_task_on_reset=sample_task_on_reset)
        HalfCheetahEnv.__init__(
            self,
            xml_file=xml_file,
            frame_skip=frame_skip,
            ctrl_cost_weight=float(ctrl_cost_weight),
            reset_noise_scale=reset_noise_scale,
            exclude_current_positions_from_observation=exclude_current_positions_from_observation,
            render_mode=render_mode,
            width=width,
            height=height,
        )
        utils.EzPickle.__init__(self, **ctor_kwargs)  # after HalfCheetahEnv's, which records its own arguments
        self.max_episode_steps = int(max_episode_steps)

    def _forward_reward(self, x_velocity: np.ndarray, goals: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _batch_reward(
        self,
        x_velocity: np.ndarray,
        actions: np.ndarray,
        goals: np.ndarray,
        healthy: np.ndarray,
        cfrc_ext: np.ndarray | None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        forward = self._forward_reward(x_velocity, goals)
        ctrl_cost = self._ctrl_cost_weight * np.sum(np.square(actions), axis=1)
        return forward - ctrl_cost, {"reward_forward": forward, "reward_ctrl": -ctrl_cost}

    def _batch_observation(self, qpos: np.ndarray, qvel: np.ndarray, cfrc_ext: np.ndarray | None) -> np.ndarray:
        # HalfCheetahEnv._get_obs on a batch: qpos (without the root's x), then qvel
        position = qpos[:, 1:] if self._exclude_current_positions_from_observation else qpos
        return np.concatenate([position, qvel], axis=1)


class HalfCheetahVelTasks(_HalfCheetahTasks):
    """HalfCheetah goal velocity: run forward at a goal velocity ~ U[velocity_range] (MAML, Sec. 5.3).

    Reward per step: ``−|v_x − v_goal| − ctrl_cost_weight·Σa²`` with ``ctrl_cost_weight = 0.05`` (the
    original MAML code's ``0.5·1e-1``; HalfCheetah-v5's own is 0.1). Observation: HalfCheetah-v5's (17 numbers).

    :param velocity_range: goal velocities are drawn from U[low, high] ((0.0, 2.0), as the original MAML code)
    :param ctrl_cost_weight: weight of Σa² (0.05)
    :param max_episode_steps: horizon (200)
    :param reset_noise_scale: initial-state noise (0.1, as HalfCheetah-v5: qpos + U[±0.1], qvel + 0.1·N(0, 1))
    :param exclude_current_positions_from_observation: omit the root's x (True, as HalfCheetah-v5)
    :param frame_skip: MuJoCo steps per env step (5, dt = 0.05 s)
    :param xml_file: MuJoCo model ("half_cheetah.xml", gymnasium's)
    :param seed: seed of the task RNG
    :param sample_task_on_reset: draw a new task at every reset (task mixture)
    :param render_mode: gymnasium MuJoCo render mode ("rgb_array", "human", ...)
    :param width: render width (480)
    :param height: render height (480)
    """

    task_type = HalfCheetahVelTask

    def __init__(
        self,
        velocity_range: tuple[float, float] = (0.0, 2.0),
        ctrl_cost_weight: float = 0.05,
        max_episode_steps: int = 200,
        reset_noise_scale: float = 0.1,
        exclude_current_positions_from_observation: bool = True,
        frame_skip: int = 5,
        xml_file: str = "half_cheetah.xml",
        seed: int | None = None,
        sample_task_on_reset: bool = False,
        render_mode: str | None = None,
        width: int = 480,
        height: int = 480,
    ) -> None:
        ctor_kwargs = init_kwargs(locals())
        low, high = (float(v) for v in velocity_range)
        if not (np.isfinite(low) and np.isfinite(high) and low <= high):
            raise ValueError(f"velocity_range must be finite (low, high) with low <= high, got {velocity_range!r}")
        self.velocity_range = (low, high)
        cheetah_kwargs = {k: v for k, v in ctor_kwargs.items() if k != "velocity_range"}
        self._init_cheetah(**cheetah_kwargs, ctor_kwargs=ctor_kwargs)

    def _sample_task(self, rng: np.random.Generator) -> HalfCheetahVelTask:
        return HalfCheetahVelTask(velocity=float(rng.uniform(*self.velocity_range)))

    def _task_goal(self, task: HalfCheetahVelTask) -> float:
        return task.velocity

    def _forward_reward(self, x_velocity: np.ndarray, goals: np.ndarray) -> np.ndarray:
        return -np.abs(x_velocity - goals)


class HalfCheetahDirTasks(_HalfCheetahTasks):
    """HalfCheetah goal direction: run forward or backward, each with probability ½ (MAML, Sec. 5.3).

    Reward per step: ``direction·v_x − ctrl_cost_weight·Σa²`` with ``ctrl_cost_weight = 0.05`` (the original
    MAML code's; HalfCheetah-v5's own is 0.1). Observation: HalfCheetah-v5's (17 numbers).

    :param ctrl_cost_weight: weight of Σa² (0.05)
    :param max_episode_steps: horizon (200)
    :param reset_noise_scale: initial-state noise (0.1, as HalfCheetah-v5)
    :param exclude_current_positions_from_observation: omit the root's x (True, as HalfCheetah-v5)
    :param frame_skip: MuJoCo steps per env step (5, dt = 0.05 s)
    :param xml_file: MuJoCo model ("half_cheetah.xml", gymnasium's)
    :param seed: seed of the task RNG
    :param sample_task_on_reset: draw a new task at every reset (task mixture)
    :param render_mode: gymnasium MuJoCo render mode ("rgb_array", "human", ...)
    :param width: render width (480)
    :param height: render height (480)
    """

    task_type = HalfCheetahDirTask

    def __init__(
        self,
        ctrl_cost_weight: float = 0.05,
        max_episode_steps: int = 200,
        reset_noise_scale: float = 0.1,
        exclude_current_positions_from_observation: bool = True,
        frame_skip: int = 5,
        xml_file: str = "half_cheetah.xml",
        seed: int | None = None,
        sample_task_on_reset: bool = False,
        render_mode: str | None = None,
        width: int = 480,
        height: int = 480,
    ) -> None:
        ctor_kwargs = init_kwargs(locals())
        self._init_cheetah(**ctor_kwargs, ctor_kwargs=ctor_kwargs)

    def _sample_task(self, rng: np.random.Generator) -> HalfCheetahDirTask:
        return HalfCheetahDirTask(direction=1.0 if rng.random() < 0.5 else -1.0)

    def _task_goal(self, task: HalfCheetahDirTask) -> float:
        return task.direction

    def _forward_reward(self, x_velocity: np.ndarray, goals: np.ndarray) -> np.ndarray:
        return goals * x_velocity


HalfCheetahVelTasks.batched_vec_env_cls = MujocoTaskVecEnv
HalfCheetahDirTasks.batched_vec_env_cls = MujocoTaskVecEnv
