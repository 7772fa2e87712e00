"""Capture and restore every random state that meta-training draws on (for bit-identical resumption).

- torch's global RNG (action sampling; sb3-contrib's conjugate gradient starts from a random vector),
- the task sampler's RNG (the task-distribution env given to the model),
- each sub-env's RNGs (task RNG for the task mixture, initial-state RNG) and pending reset seeds.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

__all__ = ["get_rng_state", "set_rng_state", "unwrap_task_vec_env"]


def unwrap_task_vec_env(venv: VecEnv) -> VecEnv:
    """The innermost VecEnv under SB3 VecEnvWrappers (VecMonitor...)."""
    while isinstance(venv, VecEnvWrapper):
        venv = venv.venv
    return venv


def _vec_env_state(venv: VecEnv) -> dict[str, Any]:
    inner = unwrap_task_vec_env(venv)
    state: dict[str, Any] = {"seeds": list(inner._seeds), "options": copy.deepcopy(inner._options)}
    if callable(getattr(inner, "get_rng_states", None)):
        state["sub_envs"] = inner.get_rng_states()  # type: ignore[attr-defined]
    else:  # SB3 Dummy/SubprocVecEnv over gymnasium envs
        state["np_random"] = [g.bit_generator.state for g in inner.get_attr("np_random")]
        state["task_rng"] = [g.bit_generator.state for g in inner.get_attr("task_rng")]
    return state


def _set_vec_env_state(venv: VecEnv, state: dict[str, Any]) -> None:
    inner = unwrap_task_vec_env(venv)
    if len(state["seeds"]) != inner.num_envs:
        raise ValueError(f"Saved RNG state is for {len(state['seeds'])} sub-envs, the env has {inner.num_envs}")
    inner._seeds = list(state["seeds"])
    inner._options = copy.deepcopy(state["options"])
    batched = callable(getattr(inner, "set_rng_states", None))
    if ("sub_envs" in state) != batched:
        # Saved from a batched VecEnv and loaded into SB3's Dummy/SubprocVecEnv (or the reverse): the per-sub-env
        # RNGs live in different places and cannot be transferred.
        warnings.warn(
            f"The checkpoint holds the sub-env RNG states of a {'batched' if 'sub_envs' in state else 'Dummy/Subproc'} "
            f"VecEnv, which cannot be restored into {type(inner).__name__}: training resumes, but not bit for bit"
        )
        return
    if batched:
        inner.set_rng_states(state["sub_envs"])  # type: ignore[attr-defined]
        return
    for i, (np_state, task_state) in enumerate(zip(state["np_random"], state["task_rng"])):
        np_random = np.random.Generator(np.random.PCG64())
        np_random.bit_generator.state = np_state
        inner.set_attr("np_random", np_random, indices=[i])
        task_rng = np.random.Generator(np.random.PCG64())
        task_rng.bit_generator.state = task_state
        inner.set_attr("_task_rng", task_rng, indices=[i])


def get_rng_state(task_env: Any, venv: VecEnv | None) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": th.get_rng_state()}
    if th.cuda.is_available() and th.cuda.is_initialized():
        state["torch_cuda"] = th.cuda.get_rng_state_all()
    if task_env is not None and hasattr(task_env, "task_rng"):
        state["task_sampler"] = task_env.task_rng.bit_generator.state
    if venv is not None:
        state["vec_env"] = _vec_env_state(venv)
    return state


def set_rng_state(state: dict[str, Any], task_env: Any, venv: VecEnv | None) -> None:
    th.set_rng_state(state["torch"])
    if "torch_cuda" in state and th.cuda.is_available():
        th.cuda.set_rng_state_all(state["torch_cuda"])
    if task_env is not None and "task_sampler" in state and hasattr(task_env, "task_rng"):
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = state["task_sampler"]
        task_env._task_rng = rng
    if venv is not None and "vec_env" in state:
        _set_vec_env_state(venv, state["vec_env"])
