"""Ant goal-velocity and goal-direction task distributions (Finn et al., 2017, Sec. 5.3) on gymnasium's Ant-v5.

The MuJoCo model, observation (with the contact forces ``cfrc_ext``), initial-state noise, health check and
unhealthy termination are gymnasium's ``AntEnv`` (v5); only the reward depends on the task. The time step is
rllab's Ant's, 0.02 s (``frame_skip=2`` on Ant-v5's 0.01 s model; Ant-v5 itself steps 0.05 s). Reward
coefficients default to those of the original MAML code (rllab's ``AntEnvRand`` / ``AntEnvRandDirec``);
``coefficients="ant-v5"`` switches to Ant-v5's own.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from gymnasium import utils
from gymnasium.envs.mujoco.ant_v5 import AntEnv

from sb3_meta.envs.core import TaskEnv
from sb3_meta.envs.mujoco_vec_env import (
    DirectionTask,
    MujocoTaskEnv,
    MujocoTaskVecEnv,
    VelocityTask,
    check_mujoco_arguments,
    init_kwargs,
)

__all__ = ["ANT_COEFFICIENTS", "AntDirTask", "AntDirTasks", "AntVelTask", "AntVelTasks"]

#: Reward coefficient presets: the original MAML code's (default) and gymnasium Ant-v5's.
ANT_COEFFICIENTS: dict[str, dict[str, float]] = {
    "maml": {"ctrl_cost_weight": 0.005, "contact_cost_weight": 5e-4, "healthy_reward": 0.05},
    "ant-v5": {"ctrl_cost_weight": 0.5, "contact_cost_weight": 5e-4, "healthy_reward": 1.0},
}


@dataclasses.dataclass(frozen=True)
class AntVelTask(VelocityTask):
    """A Ant goal-velocity task: the forward (x) velocity to run at, in m/s."""


@dataclasses.dataclass(frozen=True)
class AntDirTask(DirectionTask):
    """A Ant goal-direction task: run forward (``direction=1``) or backward (``direction=-1``) along x."""


class _AntTasks(MujocoTaskEnv, AntEnv):
    """Ant-v5 with a task-dependent forward reward (shared part of :class:`AntVelTasks` and :class:`AntDirTasks`).

    Reward: ``forward(x_velocity, task) + healthy_reward·healthy − ctrl_cost_weight·Σa²
    − contact_cost_weight·Σclip(cfrc_ext, contact_force_range)²``, where ``x_velocity`` is the torso's
    x displacement over the step divided by ``dt = frame_skip·0.01`` (as Ant-v5; ``frame_skip`` 2 by default) and
    the contact term sums over every body's 6 external-force components (as Ant-v5).
    """

    velocity_body = 1  # Ant-v5's main_body, the torso

    def _init_ant(
        self,
        *,
        coefficients: str,
        ctrl_cost_weight: float | None,
        contact_cost_weight: float | None,
        healthy_reward: float | None,
        max_episode_steps: int,
        terminate_when_unhealthy: bool,
        healthy_z_range: tuple[float, float],
        contact_force_range: tuple[float, float],
        reset_noise_scale: float,
        include_cfrc_ext_in_observation: bool,
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
        if coefficients not in ANT_COEFFICIENTS:
            raise ValueError(f"coefficients must be one of {sorted(ANT_COEFFICIENTS)}, got {coefficients!r}")
        preset = ANT_COEFFICIENTS[coefficients]
        given = {
            "ctrl_cost_weight": ctrl_cost_weight,
            "contact_cost_weight": contact_cost_weight,
            "healthy_reward": healthy_reward,
        }
        weights: dict[str, Any] = {name: preset[name] if value is None else float(value) for name, value in given.items()}
        if not all(np.isfinite(list(weights.values()))):
            raise ValueError(f"Reward coefficients must be finite, got {weights}")
        check_mujoco_arguments(
            type(self).__name__, max_episode_steps, frame_skip, reset_noise_scale, render_mode, self.metadata["render_modes"]
        )
        for range_name, bounds in (("healthy_z_range", healthy_z_range), ("contact_force_range", contact_force_range)):
            pair = np.asarray(bounds, dtype=object).ravel()
            numbers = len(pair) == 2 and all(isinstance(b, (int, float, np.integer, np.floating)) for b in pair)
            if not numbers or not float(pair[0]) < float(pair[1]):
                raise ValueError(f"{type(self).__name__}: {range_name} must be (low, high) with low < high, got {bounds!r}")
        TaskEnv.__init__(self, seed=seed, sample_task_on_reset=sample_task_on_reset)
        AntEnv.__init__(
            self,
            xml_file=xml_file,
            frame_skip=frame_skip,
            terminate_when_unhealthy=terminate_when_unhealthy,
            healthy_z_range=tuple(healthy_z_range),  # type: ignore[arg-type]  # a pair: tuple() drops the length
            contact_force_range=tuple(contact_force_range),  # type: ignore[arg-type]  # a pair, as above
            reset_noise_scale=reset_noise_scale,
            exclude_current_positions_from_observation=exclude_current_positions_from_observation,
            include_cfrc_ext_in_observation=include_cfrc_ext_in_observation,
            render_mode=render_mode,
            width=width,
            height=height,
            **weights,
        )
        utils.EzPickle.__init__(self, **ctor_kwargs)  # after AntEnv's, which records AntEnv's arguments
        self.coefficients = coefficients
        self.max_episode_steps = int(max_episode_steps)
        self.terminate_when_unhealthy = bool(terminate_when_unhealthy)
        self.uses_contact_forces = bool(include_cfrc_ext_in_observation or self._contact_cost_weight != 0)

    # --- reward, observation, health (vectorised; see MujocoTaskEnv) ---------------------------------
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
        survive = healthy * self._healthy_reward  # only while healthy, as Ant-v5
        ctrl_cost = self._ctrl_cost_weight * np.sum(np.square(actions), axis=1)
        if cfrc_ext is None:  # contact_cost_weight == 0 and cfrc_ext not computed
            contact_cost = np.zeros(len(actions))
        else:
            low, high = self._contact_force_range
            clipped = np.clip(cfrc_ext, low, high).reshape(len(cfrc_ext), -1)
            contact_cost = self._contact_cost_weight * np.sum(np.square(clipped), axis=1)
        rewards = forward + survive - (ctrl_cost + contact_cost)
        components = {
            "reward_forward": forward,
            "reward_ctrl": -ctrl_cost,
            "reward_contact": -contact_cost,
            "reward_survive": survive,
        }
        return rewards, components

    def _batch_observation(self, qpos: np.ndarray, qvel: np.ndarray, cfrc_ext: np.ndarray | None) -> np.ndarray:
        # AntEnv._get_obs on a batch: qpos (without x, y), qvel, then clip(cfrc_ext[1:]) flattened
        parts = [qpos[:, 2:] if self._exclude_current_positions_from_observation else qpos, qvel]
        if self._include_cfrc_ext_in_observation:
            assert cfrc_ext is not None
            low, high = self._contact_force_range
            parts.append(np.clip(cfrc_ext[:, 1:], low, high).reshape(len(cfrc_ext), -1))
        return np.concatenate(parts, axis=1)

    def _batch_reset_info(self, qpos: np.ndarray) -> list[dict[str, Any]]:
        return [
            {"x_position": row[0], "y_position": row[1], "distance_from_origin": np.linalg.norm(row[0:2], ord=2)}
            for row in qpos
        ]

    def _batch_healthy(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        # AntEnv.is_healthy on a batch: finite state and torso height within healthy_z_range
        min_z, max_z = self._healthy_z_range
        finite = np.isfinite(qpos).all(axis=1) & np.isfinite(qvel).all(axis=1)
        return finite & (min_z <= qpos[:, 2]) & (qpos[:, 2] <= max_z)

    def _single_healthy(self) -> bool:
        return bool(self.is_healthy)


class AntVelTasks(_AntTasks):
    """Ant goal velocity: run forward at a goal velocity ~ U[velocity_range] (MAML, Sec. 5.3).

    Reward per step (original MAML code, ``AntEnvRand``, by default)::

        −|v_x − v_goal| + forward_reward_offset + healthy_reward·healthy − ctrl_cost_weight·Σa²
        − contact_cost_weight·Σclip(cfrc_ext, contact_force_range)²

    with ``forward_reward_offset = 1.0``, ``healthy_reward = 0.05``, ``ctrl_cost_weight = 0.005``,
    ``contact_cost_weight = 5e-4``, ``contact_force_range = (-1, 1)``. ``coefficients="ant-v5"`` uses
    Ant-v5's ``ctrl_cost_weight = 0.5``, ``contact_cost_weight = 5e-4``, ``healthy_reward = 1.0`` instead.
    ``v_x`` (``info["x_velocity"]``) is the torso's x velocity as Ant-v5 measures it. The healthy bonus is
    paid only while healthy (Ant-v5; the original paid it on the terminal step too). Observation: Ant-v5's
    (105 numbers, including the clipped contact forces). Episodes terminate when unhealthy (torso height
    outside ``healthy_z_range`` or non-finite state) and are truncated after ``max_episode_steps``.

    :param velocity_range: goal velocities are drawn from U[low, high] ((0.0, 2.0); the original MAML code
        used (0.0, 3.0))
    :param forward_reward_offset: constant added to the forward term (1.0)
    :param coefficients: ``"maml"`` (default) or ``"ant-v5"``: preset of the three weights below
    :param ctrl_cost_weight: weight of Σa² (None: the preset's, 0.005 for "maml", 0.5 for "ant-v5")
    :param contact_cost_weight: weight of the clipped contact forces' Σ² (None: the preset's, 5e-4 for both)
    :param healthy_reward: bonus per healthy step (None: the preset's, 0.05 for "maml", 1.0 for "ant-v5")
    :param max_episode_steps: horizon (200)
    :param terminate_when_unhealthy: terminate when unhealthy (True, as Ant-v5)
    :param healthy_z_range: healthy torso heights ((0.2, 1.0), as Ant-v5)
    :param contact_force_range: clipping range of cfrc_ext in observation and cost ((-1.0, 1.0), as Ant-v5)
    :param reset_noise_scale: initial-state noise (0.1, as Ant-v5: qpos + U[±0.1], qvel + 0.1·N(0, 1))
    :param include_cfrc_ext_in_observation: observe the contact forces (True, as Ant-v5)
    :param exclude_current_positions_from_observation: omit the torso's x, y (True, as Ant-v5)
    :param frame_skip: MuJoCo substeps per env step (2: dt = 0.02 s, the time step of rllab's Ant that the MAML paper
        used; at Ant-v5's own 5, dt = 0.05 s, 38 of 40 random-policy episodes end early, median 48 steps, and the
        meta-learners did not learn in 60 iterations, see docs/results.md)
    :param xml_file: MuJoCo model ("ant.xml", gymnasium's)
    :param seed: seed of the task RNG
    :param sample_task_on_reset: draw a new task at every reset (task mixture)
    :param render_mode: gymnasium MuJoCo render mode ("rgb_array", "human", ...)
    :param width: render width (480)
    :param height: render height (480)
    """

    task_type = AntVelTask

    def __init__(
        self,
        velocity_range: tuple[float, float] = (0.0, 2.0),
        forward_reward_offset: float = 1.0,
        coefficients: str = "maml",
        ctrl_cost_weight: float | None = None,
        contact_cost_weight: float | None = None,
        healthy_reward: float | None = None,
        max_episode_steps: int = 200,
        terminate_when_unhealthy: bool = True,
        healthy_z_range: tuple[float, float] = (0.2, 1.0),
        contact_force_range: tuple[float, float] = (-1.0, 1.0),
        reset_noise_scale: float = 0.1,
        include_cfrc_ext_in_observation: bool = True,
        exclude_current_positions_from_observation: bool = True,
        frame_skip: int = 2,
        xml_file: str = "ant.xml",
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
        if not np.isfinite(forward_reward_offset):
            raise ValueError(f"forward_reward_offset must be finite, got {forward_reward_offset!r}")
        self.velocity_range = (low, high)
        self.forward_reward_offset = float(forward_reward_offset)
        ant_kwargs = {k: v for k, v in ctor_kwargs.items() if k not in ("velocity_range", "forward_reward_offset")}
        self._init_ant(**ant_kwargs, ctor_kwargs=ctor_kwargs)

    def _sample_task(self, rng: np.random.Generator) -> AntVelTask:
        return AntVelTask(velocity=float(rng.uniform(*self.velocity_range)))

    def _task_goal(self, task: AntVelTask) -> float:
        return task.velocity

    def _forward_reward(self, x_velocity: np.ndarray, goals: np.ndarray) -> np.ndarray:
        return -np.abs(x_velocity - goals) + self.forward_reward_offset


class AntDirTasks(_AntTasks):
    """Ant goal direction: run forward or backward along x, each with probability ½ (MAML, Sec. 5.3).

    Reward per step (original MAML code, ``AntEnvRandDirec``, by default)::

        direction·v_x + healthy_reward·healthy − ctrl_cost_weight·Σa²
        − contact_cost_weight·Σclip(cfrc_ext, contact_force_range)²

    with ``healthy_reward = 0.05``, ``ctrl_cost_weight = 0.005``, ``contact_cost_weight = 5e-4``,
    ``contact_force_range = (-1, 1)``; ``coefficients="ant-v5"`` uses Ant-v5's 1.0, 0.5 and 5e-4.
    Everything else is as :class:`AntVelTasks` (Ant-v5 observation, termination; horizon 200).

    :param coefficients: ``"maml"`` (default) or ``"ant-v5"``: preset of the three weights below
    :param ctrl_cost_weight: weight of Σa² (None: the preset's, 0.005 for "maml", 0.5 for "ant-v5")
    :param contact_cost_weight: weight of the clipped contact forces' Σ² (None: the preset's, 5e-4 for both)
    :param healthy_reward: bonus per healthy step (None: the preset's, 0.05 for "maml", 1.0 for "ant-v5")
    :param max_episode_steps: horizon (200)
    :param terminate_when_unhealthy: terminate when unhealthy (True, as Ant-v5)
    :param healthy_z_range: healthy torso heights ((0.2, 1.0), as Ant-v5)
    :param contact_force_range: clipping range of cfrc_ext in observation and cost ((-1.0, 1.0), as Ant-v5)
    :param reset_noise_scale: initial-state noise (0.1, as Ant-v5)
    :param include_cfrc_ext_in_observation: observe the contact forces (True, as Ant-v5)
    :param exclude_current_positions_from_observation: omit the torso's x, y (True, as Ant-v5)
    :param frame_skip: MuJoCo substeps per env step (2: dt = 0.02 s, the time step of rllab's Ant that the MAML paper
        used; at Ant-v5's own 5, dt = 0.05 s, 38 of 40 random-policy episodes end early, median 48 steps, and the
        meta-learners did not learn in 60 iterations, see docs/results.md)
    :param xml_file: MuJoCo model ("ant.xml", gymnasium's)
    :param seed: seed of the task RNG
    :param sample_task_on_reset: draw a new task at every reset (task mixture)
    :param render_mode: gymnasium MuJoCo render mode ("rgb_array", "human", ...)
    :param width: render width (480)
    :param height: render height (480)
    """

    task_type = AntDirTask

    def __init__(
        self,
        coefficients: str = "maml",
        ctrl_cost_weight: float | None = None,
        contact_cost_weight: float | None = None,
        healthy_reward: float | None = None,
        max_episode_steps: int = 200,
        terminate_when_unhealthy: bool = True,
        healthy_z_range: tuple[float, float] = (0.2, 1.0),
        contact_force_range: tuple[float, float] = (-1.0, 1.0),
        reset_noise_scale: float = 0.1,
        include_cfrc_ext_in_observation: bool = True,
        exclude_current_positions_from_observation: bool = True,
        frame_skip: int = 2,
        xml_file: str = "ant.xml",
        seed: int | None = None,
        sample_task_on_reset: bool = False,
        render_mode: str | None = None,
        width: int = 480,
        height: int = 480,
    ) -> None:
        ctor_kwargs = init_kwargs(locals())
        self._init_ant(**ctor_kwargs, ctor_kwargs=ctor_kwargs)

    def _sample_task(self, rng: np.random.Generator) -> AntDirTask:
        return AntDirTask(direction=1.0 if rng.random() < 0.5 else -1.0)

    def _task_goal(self, task: AntDirTask) -> float:
        return task.direction

    def _forward_reward(self, x_velocity: np.ndarray, goals: np.ndarray) -> np.ndarray:
        return goals * x_velocity


AntVelTasks.batched_vec_env_cls = MujocoTaskVecEnv
AntDirTasks.batched_vec_env_cls = MujocoTaskVecEnv
