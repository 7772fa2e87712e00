"""Task distributions for meta-RL and the batched VecEnvs that sample them."""

import gymnasium as gym

from sb3_meta.envs.core import Task, TaskEnv, check_task
from sb3_meta.envs.point_mass import PointMassTask, PointMassTasks, PointMassVecEnv
from sb3_meta.envs.vec_env import (
    BatchedTaskVecEnv,
    TaskDummyVecEnv,
    TaskSubprocVecEnv,
    get_task_env,
    is_task_vec_env,
    make_task_vec_env,
)

__all__ = [
    "BatchedTaskVecEnv",
    "PointMassTask",
    "PointMassTasks",
    "PointMassVecEnv",
    "Task",
    "TaskDummyVecEnv",
    "TaskEnv",
    "TaskSubprocVecEnv",
    "check_task",
    "get_task_env",
    "is_task_vec_env",
    "make_task_vec_env",
]


def _register(env_id: str, entry_point: str, max_episode_steps: int) -> None:
    if env_id not in gym.registry:
        gym.register(id=env_id, entry_point=entry_point, max_episode_steps=max_episode_steps)


_register("sb3_meta/PointMass-v0", "sb3_meta.envs.point_mass:PointMassTasks", 100)
