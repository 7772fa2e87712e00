"""The documentation's code runs as written: ``docs/custom_task_distribution.md`` with FOMAML, MAML and Reptile.

The doc's python blocks are executed in order in one namespace. Its training block names the algorithm once,
as ``Algorithm = FOMAML`` (the doc says MAML and Reptile take the same arguments); the tests substitute the
other two there. The doc keeps its own sizes small, so nothing else is substituted.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import sys
import types
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from sb3_meta import FOMAML, MAML, Reptile
from sb3_meta.common.base_class import MetaAlgorithm
from sb3_meta.envs import Task, TaskEnv, core, make_task_vec_env

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "custom_task_distribution.md"
DOC_MODULE = "custom_task_distribution_doc"
#: The line of the doc that chooses the algorithm (see the module docstring).
ALGORITHM_LINE = "Algorithm = FOMAML"
ALGORITHMS = [FOMAML, MAML, Reptile]


@pytest.fixture(autouse=True)
def _forget_doc_classes() -> Iterator[None]:
    """Unregister the doc's task classes afterwards: another test running the doc under another module name
    would otherwise find two ``LineTask`` classes and ``Task.from_json`` would (rightly) call the name ambiguous."""
    saved = {name: list(classes) for name, classes in core._TASK_REGISTRY.items()}
    yield
    core._TASK_REGISTRY.clear()
    core._TASK_REGISTRY.update(saved)
    sys.modules.pop(DOC_MODULE, None)


def python_blocks(path: pathlib.Path) -> list[str]:
    """The fenced ```python blocks of a markdown file, in order."""
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.S | re.M)


def run_doc(algorithm: type[MetaAlgorithm] = FOMAML) -> dict[str, Any]:
    """Execute every python block of the doc with ``algorithm``; the namespace it leaves.

    The blocks run as the body of a module registered in ``sys.modules`` (as a reader's script would be), so
    that dataclasses and pickling find the classes they define (until the test ends).
    """
    blocks = python_blocks(DOC)
    assert sum(block.count(ALGORITHM_LINE) for block in blocks) == 1, f"the doc must contain {ALGORITHM_LINE!r} once"
    module = types.ModuleType(DOC_MODULE)
    sys.modules[DOC_MODULE] = module
    for i, block in enumerate(blocks):
        code = block.replace(ALGORITHM_LINE, f"Algorithm = {algorithm.__name__}")
        # dont_inherit: the doc's code runs without this file's ``from __future__ import annotations``
        exec(compile(code, f"{DOC.name} (python block {i + 1})", "exec", dont_inherit=True), module.__dict__)
    return module.__dict__


def test_doc_has_code() -> None:
    blocks = python_blocks(DOC)
    assert blocks and "class LineTasks" in blocks[0] and "model.learn(" in "".join(blocks)


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.__name__)
def test_custom_distribution_doc_runs(algorithm: type[MetaAlgorithm]) -> None:
    ns = run_doc(algorithm)
    model, adapted, tasks = ns["model"], ns["adapted"], ns["tasks"]
    assert type(model) is algorithm and type(adapted) is algorithm
    assert model.num_timesteps >= 2_000 and model.n_iterations >= 2
    assert adapted.task_env.get_task() == tasks[0]
    assert adapted.action_space.contains(np.asarray(ns["action"], dtype=np.float32))
    # the adapted parameters differ from the meta-parameters (one inner step was taken)
    assert any((a != m).any() for a, m in zip(adapted.meta_parameters().values(), model.meta_parameters().values()))


def test_doc_claims_about_wrong_input() -> None:
    """The doc's closing paragraph: wrong tasks and counts raise a ValueError naming what was expected."""
    ns = run_doc()
    env = ns["LineTasks"](seed=0)
    with pytest.raises(ValueError, match="LineTask"):
        env.reset_task(0.5)
    with pytest.raises(ValueError, match="LineTask"):
        env.reset_task(ns["LineTask"].__mro__[1]())  # a Task, but not a LineTask
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        env.sample_tasks(0)


@dataclasses.dataclass(frozen=True)
class _TargetTask(Task):
    target: float = 0.0


class _NoHorizonTasks(TaskEnv[_TargetTask]):
    """Like the doc's LineTasks as first published: a TaskEnv subclass that truncates its episodes itself (after 5
    steps) but never declares ``max_episode_steps``."""

    task_type = _TargetTask
    observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(1,), dtype=np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def __init__(self, seed: int | None = None) -> None:
        super().__init__(seed=seed)
        self._target, self._steps = 0.0, 0

    def _sample_task(self, rng: np.random.Generator) -> _TargetTask:
        return _TargetTask(float(rng.uniform(-1.0, 1.0)))

    def _apply_task(self, task: _TargetTask) -> None:
        self._target = task.target

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):  # type: ignore[override]
        super().reset(seed=seed, options=options)
        self._steps = 0
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):  # type: ignore[override]
        self._steps += 1
        reward = -abs(float(np.asarray(action).ravel()[0]) - self._target)
        return np.zeros(1, dtype=np.float32), reward, False, self._steps >= 5, {}


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.__name__)
def test_missing_horizon_asks_for_max_episode_steps(algorithm: type[MetaAlgorithm]) -> None:
    """A TaskEnv without a horizon: the algorithm's error says to pass max_episode_steps (not an AttributeError)."""
    model = algorithm("MlpPolicy", _NoHorizonTasks(seed=0), meta_batch_size=2, fast_batch_size=1, seed=0)
    with pytest.raises(ValueError, match=r"pass max_episode_steps=\.\.\."):
        model.learn(total_timesteps=10)
    # and passing it is the fix the message names
    model = algorithm("MlpPolicy", _NoHorizonTasks(seed=0), meta_batch_size=2, fast_batch_size=1, seed=0, max_episode_steps=5)
    model.learn(total_timesteps=10)
    assert model.num_timesteps > 0


@dataclasses.dataclass(frozen=True)
class _PlainTask(Task):
    target: float = 0.0


class _DuckTypedTasks(gym.Env):
    """A task distribution that does not derive from TaskEnv (duck typing: sample_tasks / reset_task / get_task)
    and has no ``max_episode_steps`` attribute at all."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(1,), dtype=np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def __init__(self) -> None:
        self._task = _PlainTask()
        self._rng = np.random.default_rng(0)
        self._steps = 0

    def sample_tasks(self, n: int) -> list[_PlainTask]:
        return [_PlainTask(float(self._rng.uniform(-1, 1))) for _ in range(n)]

    def reset_task(self, task: _PlainTask) -> None:
        self._task = task

    def get_task(self) -> _PlainTask:
        return self._task

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):  # type: ignore[override]
        super().reset(seed=seed)
        self._steps = 0
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):  # type: ignore[override]
        self._steps += 1
        return np.zeros(1, dtype=np.float32), -abs(self._task.target), False, self._steps >= 5, {}


def test_missing_horizon_error_without_task_env_base() -> None:
    venv = make_task_vec_env(_DuckTypedTasks(), 2)
    model = FOMAML("MlpPolicy", venv, meta_batch_size=2, fast_batch_size=1, seed=0)
    with pytest.raises(ValueError, match=r"pass max_episode_steps=\.\.\."):
        model.learn(total_timesteps=10)


class _DuckTypedTaskType(_DuckTypedTasks):
    """With what SB3's Dummy/SubprocVecEnv path checks tasks with (set_tasks): task_type and validate_task."""

    task_type = _PlainTask

    def validate_task(self, task: _PlainTask) -> _PlainTask:
        return task


def test_a_duck_typed_distribution_trains_saves_and_resumes(tmp_path) -> None:
    """A distribution without sb3_meta's TaskEnv base (no task_rng of its own) in SB3's DummyVecEnv: training,
    the iteration-start snapshot and save/load work; its own RNG is its business."""
    model = FOMAML(
        "MlpPolicy",
        make_task_vec_env(_DuckTypedTaskType(), 2),
        meta_batch_size=2,
        fast_batch_size=1,
        seed=0,
        max_episode_steps=5,
    )
    model.learn(1)
    model.save(tmp_path / "duck.zip")
    loaded = FOMAML.load(tmp_path / "duck.zip", env=make_task_vec_env(_DuckTypedTaskType(), 2))
    assert loaded.n_iterations == 1
    loaded.learn(1, reset_num_timesteps=False)
    assert loaded.n_iterations == 2
