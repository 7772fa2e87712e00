"""Task distributions for meta-RL and the batched VecEnvs that sample them."""

import gymnasium as gym

from sb3_meta.envs.ant import AntDirTask, AntDirTasks, AntVelTask, AntVelTasks
from sb3_meta.envs.core import Task, TaskEnv, check_task
from sb3_meta.envs.half_cheetah import HalfCheetahDirTask, HalfCheetahDirTasks, HalfCheetahVelTask, HalfCheetahVelTasks
from sb3_meta.envs.mujoco_vec_env import MujocoTaskEnv, MujocoTaskVecEnv
from sb3_meta.envs.point_mass import PointMassTask, PointMassTasks, PointMassVecEnv
from sb3_meta.envs.vec_env import (
    BatchedTaskVecEnv,
    TaskDummyVecEnv,
    TaskSubprocVecEnv,
    get_task_env,
    is_task_vec_env,
    make_task_vec_env,
)
from sb3_meta.envs.wrappers import OracleObservation, TaskMixture, make_oracle_env, register_oracle_env

__all__ = [
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
    "PointMassTask",
    "PointMassTasks",
    "PointMassVecEnv",
    "Task",
    "TaskDummyVecEnv",
    "TaskEnv",
    "TaskMixture",
    "TaskSubprocVecEnv",
    "check_task",
    "get_task_env",
    "is_task_vec_env",
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
