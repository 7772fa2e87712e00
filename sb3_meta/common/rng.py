"""Capture and restore every random state that meta-training draws on (for bit-identical resumption).

- the model's own torch stream (:class:`TorchStream`: action sampling; sb3-contrib's conjugate gradient starts
  from a random vector), swapped into torch's global generator only while the model draws,
- the task sampler's RNG (the task-distribution env given to the model),
- each sub-env's RNGs (task RNG for the task mixture, initial-state RNG) and pending reset seeds.

:func:`get_rng_state` returns the live states (torch's as a tensor); :func:`rng_state_to_json` turns them into
plain JSON data (torch's bytes in base64) for checkpoints, so that loading one unpickles nothing of it, and
:func:`rng_state_from_json` is its inverse.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

__all__ = ["TorchStream", "get_rng_state", "rng_state_from_json", "rng_state_to_json", "set_rng_state", "unwrap_task_vec_env"]

#: key of the JSON object that stands for a torch tensor (its raw bytes in base64, dtype and shape)
TENSOR_KEY = ":torch_tensor_base64:"
#: key of the JSON object that stands for a numpy array (its values as nested lists, and dtype)
NDARRAY_KEY = ":ndarray:"


class TorchStream:
    """A model's own torch random stream: torch's generator state (CPU, and the model's CUDA device), swapped into
    torch's global generator only while the model draws from it (:meth:`active`).

    Torch draws from one global generator per device. SB3 models share it, so that two models with the same seed
    give different results when one trains between the other's construction and training (or when they are
    interleaved, e.g. an evaluation model inside a callback). Swapping a per-model state in around the model's
    own draws (sampling, the outer step, ``predict``) and out around everything else (callbacks: :meth:`paused`)
    gives every model its own stream: same seed, same result, however models and callbacks are interleaved in one
    process, and torch's global generator advances only by what the rest of the process draws.

    :param device: the model's device (a CUDA device's generator is kept too)
    """

    def __init__(self, device: th.device | str = "cpu") -> None:
        self.device = th.device(device)
        self._outer: tuple[th.Tensor, th.Tensor | None] | None = None  # the global state while active
        self._handed_out = False  # within paused(): a callback holds torch's global generator
        self.cpu, self.cuda = self._global_state()

    def _global_state(self) -> tuple[th.Tensor, th.Tensor | None]:
        return th.get_rng_state(), (th.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None)

    def _set_global_state(self, state: tuple[th.Tensor, th.Tensor | None]) -> None:
        th.set_rng_state(state[0])
        if state[1] is not None and self.device.type == "cuda":
            th.cuda.set_rng_state(state[1], self.device)

    def state(self) -> tuple[th.Tensor, th.Tensor | None]:
        """(CPU state, CUDA state or None) of the stream now, also while it is active."""
        if self._outer is not None:  # active: the global generator holds the live state
            return self._global_state()
        return self.cpu.clone(), (None if self.cuda is None else self.cuda.clone())

    def set_state(self, cpu: th.Tensor, cuda: th.Tensor | None = None) -> None:
        """Make ``cpu`` (and ``cuda``, for a CUDA model) the stream's state (as from a checkpoint or a reseed)."""
        self.cpu = cpu.clone()
        if cuda is not None and self.device.type == "cuda":
            self.cuda = cuda.clone()
        if self._outer is not None:
            self._set_global_state((self.cpu, self.cuda))

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Within the block, torch draws from this stream; the global state is put back after it (nested: no-op).

        Within :meth:`paused` (a callback runs) it is a no-op too: what the callback makes the model draw (e.g.
        ``predict`` with sampled actions in SB3's ``EvalCallback``) comes from the generator the callback holds,
        as its other draws do, so that training goes on as it would without the callback.
        """
        if self._outer is not None or self._handed_out:
            yield
            return
        self._outer = self._global_state()
        self._set_global_state((self.cpu, self.cuda))
        try:
            yield
        finally:
            self.cpu, self.cuda = self._global_state()
            outer, self._outer = self._outer, None
            self._set_global_state(outer)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hand torch's global generator to a callback for a while: within an :meth:`active` block the stream is
        swapped out and back in after it, so that the callback's draws do not consume the model's stream, nor the
        model's draws the callback's. In or out of one, what the callback makes the model draw comes from the
        global generator too (:meth:`active` is a no-op within this block)."""
        was_handed_out, self._handed_out = self._handed_out, True
        if self._outer is None:
            try:
                yield
            finally:
                self._handed_out = was_handed_out
            return
        self.cpu, self.cuda = self._global_state()
        outer, self._outer = self._outer, None
        self._set_global_state(outer)
        try:
            yield
        finally:
            self._handed_out = was_handed_out
            self._outer = self._global_state()
            self._set_global_state((self.cpu, self.cuda))


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
        try:
            state["task_rng"] = [g.bit_generator.state for g in inner.get_attr("task_rng")]
        except AttributeError:  # a duck-typed distribution (not a TaskEnv) keeps its task RNG to itself
            pass
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
    for i, np_state in enumerate(state["np_random"]):
        np_random = np.random.Generator(np.random.PCG64())
        np_random.bit_generator.state = np_state
        inner.set_attr("np_random", np_random, indices=[i])
    for i, task_state in enumerate(state.get("task_rng", [])):
        task_rng = np.random.Generator(np.random.PCG64())
        task_rng.bit_generator.state = task_state
        inner.set_attr("_task_rng", task_rng, indices=[i])


def get_rng_state(task_env: Any, venv: VecEnv | None, torch_stream: TorchStream | None = None) -> dict[str, Any]:
    """Every RNG state that training draws on, live (torch's as a tensor): see :func:`rng_state_to_json`.

    :param torch_stream: the model's own torch stream (None: torch's global generator, as checkpoints of earlier
        versions stored it)
    """
    if torch_stream is not None:
        cpu, cuda = torch_stream.state()
        state: dict[str, Any] = {"torch": cpu}
        if cuda is not None:
            state["torch_cuda_device"] = cuda
    else:
        state = {"torch": th.get_rng_state()}
        if th.cuda.is_available() and th.cuda.is_initialized():
            state["torch_cuda"] = th.cuda.get_rng_state_all()
    if task_env is not None and hasattr(task_env, "task_rng"):
        state["task_sampler"] = task_env.task_rng.bit_generator.state
    if venv is not None:
        state["vec_env"] = _vec_env_state(venv)
    return state


def set_rng_state(state: dict[str, Any], task_env: Any, venv: VecEnv | None, torch_stream: TorchStream | None = None) -> None:
    """Restore what :func:`get_rng_state` captured (live, or as :func:`rng_state_to_json` data).

    Everything is checked (sizes, format) before the first RNG changes: a state that does not fit raises and
    leaves every RNG as it was.

    :param torch_stream: the model's own torch stream, which gets the saved torch state (None: torch's global
        generator gets it). Checkpoints of earlier versions saved torch's global state under the same key, so
        they restore into the stream the same way.
    """
    state = rng_state_from_json(state)
    if not isinstance(state, dict) or not isinstance(state.get("torch"), th.Tensor):
        raise ValueError(
            "The RNG state has no torch state: expected a dict from get_rng_state (or rng_state_to_json), "
            f"got {type(state).__name__} with keys {sorted(state) if isinstance(state, dict) else []}"
        )
    if venv is not None and "vec_env" in state:
        n_saved, n_envs = len(state["vec_env"]["seeds"]), unwrap_task_vec_env(venv).num_envs
        if n_saved != n_envs:
            raise ValueError(
                f"Saved RNG state is for {n_saved} sub-envs, the env has {n_envs}: pass an env with {n_saved} sub-envs"
            )
    if torch_stream is not None:
        cuda = state.get("torch_cuda_device")
        if cuda is None and "torch_cuda" in state and torch_stream.device.type == "cuda":
            cuda = state["torch_cuda"][torch_stream.device.index or 0]  # an earlier version's per-device list
        torch_stream.set_state(state["torch"], cuda)
    else:
        th.set_rng_state(state["torch"])
        if "torch_cuda" in state and th.cuda.is_available():
            th.cuda.set_rng_state_all(state["torch_cuda"])
    if task_env is not None and "task_sampler" in state and hasattr(task_env, "task_rng"):
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = state["task_sampler"]
        task_env._task_rng = rng
    if venv is not None and "vec_env" in state:
        _set_vec_env_state(venv, state["vec_env"])


def rng_state_to_json(state: Any) -> Any:
    """``state`` (from :func:`get_rng_state`) as plain JSON data: torch tensors as base64 of their bytes, numpy
    arrays as lists, tuples as lists. Checkpoints store this, so that loading one unpickles nothing of it.

    :raises TypeError: for a value JSON cannot hold (e.g. reset options holding objects), naming where it is
    """
    plain = _to_json(state, "rng_state")
    json.dumps(plain)  # what _to_json let through is JSON: an error here is a bug of _to_json
    return plain


def rng_state_from_json(state: Any) -> Any:
    """Inverse of :func:`rng_state_to_json`; live states (tensors, as in checkpoints of earlier versions) pass
    through unchanged."""
    if isinstance(state, dict):
        if TENSOR_KEY in state:
            raw = base64.b64decode(state[TENSOR_KEY].encode())
            array = np.frombuffer(raw, dtype=np.dtype(state["dtype"])).reshape(state["shape"]).copy()
            return th.from_numpy(array)
        if NDARRAY_KEY in state:
            return np.asarray(state[NDARRAY_KEY], dtype=np.dtype(state["dtype"]))
        return {key: rng_state_from_json(value) for key, value in state.items()}
    if isinstance(state, list):
        return [rng_state_from_json(value) for value in state]
    return state


def _to_json(value: Any, where: str) -> Any:
    if isinstance(value, th.Tensor):
        array = value.detach().cpu().contiguous().numpy()
        return {TENSOR_KEY: base64.b64encode(array.tobytes()).decode(), "dtype": array.dtype.str, "shape": list(array.shape)}
    if isinstance(value, np.ndarray):
        return {NDARRAY_KEY: value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        bad = [key for key in value if not isinstance(key, str)]
        if bad:
            raise TypeError(f"{where} has non-string keys {bad!r}, which JSON cannot hold: use string keys")
        return {key: _to_json(item, f"{where}[{key!r}]") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(
        f"{where} is a {type(value).__name__}, which a checkpoint cannot store as plain data: RNG states and reset "
        "options must be numbers, strings, lists, dicts, numpy arrays or torch tensors (call env.set_options(None) "
        "before saving if reset options hold other objects)"
    )
