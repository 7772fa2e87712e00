"""Task distributions for meta-RL and the batched VecEnvs that sample them."""

import importlib
from typing import Any

import gymnasium as gym

from sb3_meta.envs.builders import AdaptationVecEnvs, make_adaptation_vec_env, make_mixture_vec_env, make_task_vec_env
from sb3_meta.envs.core import Task, TaskEnv, check_task
from sb3_meta.envs.point_mass import PointMassTask, PointMassTasks, PointMassVecEnv
from sb3_meta.envs.vec_env import (
    BatchedTaskVecEnv,
    TaskDummyVecEnv,
    TaskSubprocVecEnv,
    VecEnvLostError,
    get_task_env,
    is_task_vec_env,
)
from sb3_meta.envs.wrappers import (
    OracleObservation,
    OracleVecEnv,
    TaskMixture,
    check_not_mixture,
    make_oracle_env,
    register_oracle_env,
)

#: Names of the MuJoCo and Ray modules, imported on first use so that ``import sb3_meta`` imports neither.
_LAZY_NAMES = {
    "RayTaskVecEnv": "ray_vec_env",
    "ShardLostError": "ray_vec_env",
    "AntDirTask": "ant",
    "AntDirTasks": "ant",
    "AntVelTask": "ant",
    "AntVelTasks": "ant",
    "HalfCheetahDirTask": "half_cheetah",
    "HalfCheetahDirTasks": "half_cheetah",
    "HalfCheetahVelTask": "half_cheetah",
    "HalfCheetahVelTasks": "half_cheetah",
    "MujocoTaskEnv": "mujoco_vec_env",
    "MujocoTaskVecEnv": "mujoco_vec_env",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(f"sb3_meta.envs.{_LAZY_NAMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AdaptationVecEnvs",
    "AntDirTask",
    "AntDirTasks",
    "AntVelTask",
    "AntVelTasks",
    "BatchedTaskVecEnv",
    "HalfCheetahDirTask",
    "HalfCheetahDirTasks",
    "HalfCheetahVelTask",
    "HalfCheetahVelTasks",
    "MujocoTaskEnv",
    "MujocoTaskVecEnv",
    "OracleObservation",
    "OracleVecEnv",
    "PointMassTask",
    "PointMassTasks",
    "PointMassVecEnv",
    "RayTaskVecEnv",
    "ShardLostError",
    "Task",
    "TaskDummyVecEnv",
    "TaskEnv",
    "TaskMixture",
    "TaskSubprocVecEnv",
    "VecEnvLostError",
    "check_not_mixture",
    "check_task",
    "get_task_env",
    "is_task_vec_env",
    "make_adaptation_vec_env",
    "make_mixture_vec_env",
    "make_oracle_env",
    "make_task_vec_env",
    "register_oracle_env",
]


def _register(env_id: str, entry_point: str, max_episode_steps: int) -> None:
    if env_id not in gym.registry:
        gym.register(id=env_id, entry_point=entry_point, max_episode_steps=max_episode_steps)
    register_oracle_env(env_id)  # "sb3_meta/<Name>Oracle-v<k>": the same env with the task in the observation


_register("sb3_meta/PointMass-v0", "sb3_meta.envs.point_mass:PointMassTasks", 100)
_register("sb3_meta/AntVel-v0", "sb3_meta.envs.ant:AntVelTasks", 200)
_register("sb3_meta/AntDir-v0", "sb3_meta.envs.ant:AntDirTasks", 200)
_register("sb3_meta/HalfCheetahVel-v0", "sb3_meta.envs.half_cheetah:HalfCheetahVelTasks", 200)
_register("sb3_meta/HalfCheetahDir-v0", "sb3_meta.envs.half_cheetah:HalfCheetahDirTasks", 200)
