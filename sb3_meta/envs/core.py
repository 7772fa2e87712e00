"""Tasks and task distributions: the interface every sb3_meta environment implements.

A *task distribution* is an ordinary :class:`gymnasium.Env` that also knows how to draw tasks
(``sample_tasks``) and how to switch to one (``reset_task``). A *task* is a small frozen dataclass
(e.g. ``AntVelTask(velocity=1.2)``) so that it is hashable, picklable, printable and JSON-convertible,
and a task of one distribution is never mistaken for a task of another.

To write your own task distribution, subclass :class:`TaskEnv`, set ``task_type`` and implement
two methods, ``_sample_task(rng)`` and ``_apply_task(task)`` (plus the usual ``step``/``reset``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from typing import Any, ClassVar, Generic, TypeVar

import gymnasium as gym
import numpy as np

from sb3_meta.common.utils import check_int

__all__ = ["Task", "TaskEnv", "TaskT", "check_task"]

# Every Task subclass by name, so that ``Task.from_json`` can rebuild a task of any distribution. Two classes of
# one name (in different modules) are both kept: the name is then ambiguous and ``Task.from_json`` says so.
_TASK_REGISTRY: dict[str, list[type[Task]]] = {}


def _register_task_class(cls: type[Task]) -> None:
    same_name = _TASK_REGISTRY.setdefault(cls.__name__, [])
    # A class defined again at the same place (module reloaded, example re-run) replaces the old one.
    same_name[:] = [c for c in same_name if (c.__module__, c.__qualname__) != (cls.__module__, cls.__qualname__)]
    same_name.append(cls)


def _lookup_task_class(name: str, base: type[Task]) -> type[Task]:
    """The task class called ``name`` that derives from ``base``; ``ValueError`` if none or several."""
    if base is not Task and name == base.__name__:
        return base
    candidates = _TASK_REGISTRY.get(name, [])
    if not candidates:
        raise ValueError(f"Unknown task type {name!r}; known: {sorted(_TASK_REGISTRY)}")
    matching = [c for c in candidates if issubclass(c, base)]
    if not matching:
        raise ValueError(f"Expected a {base.__name__}, got a {name}")
    if len(matching) > 1:
        places = ", ".join(f"{c.__module__}.{c.__qualname__}" for c in matching)
        raise ValueError(f"Task type {name!r} is ambiguous ({places}); call from_dict/from_json on the task class itself")
    return matching[0]


@dataclasses.dataclass(frozen=True)
class Task:
    """Base class of a task: a frozen dataclass whose fields are finite numbers (or tuples of them).

    Subclasses only declare fields; validation, JSON round trips and the array form used by oracle
    observations are shared here.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _register_task_class(cls)

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, (list, np.ndarray)):
                # Normalise sequences to tuples of floats so tasks stay hashable and compare by value.
                value = tuple(float(v) for v in np.asarray(value, dtype=np.float64).ravel())
                object.__setattr__(self, field.name, value)
            values = value if isinstance(value, tuple) else (value,)
            for v in values:
                if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
                    raise ValueError(
                        f"{type(self).__name__}.{field.name} must be a finite number (or a tuple of them), got {value!r}"
                    )
                try:
                    finite = math.isfinite(float(v))
                except OverflowError:  # an int beyond float's range
                    finite = False
                if not finite:
                    raise ValueError(f"{type(self).__name__}.{field.name} must be finite, got {value!r}")
            if isinstance(value, tuple):
                object.__setattr__(self, field.name, tuple(float(v) for v in value))
            elif isinstance(value, (np.floating, np.integer)):
                object.__setattr__(self, field.name, value.item())

    # --- conversions -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form, tagged with the task type: ``{"type": "AntVelTask", "velocity": 1.2}``."""
        out: dict[str, Any] = {"type": type(self).__name__}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            out[field.name] = list(value) if isinstance(value, tuple) else value
        return out

    def to_json(self) -> str:
        """JSON form of :meth:`to_dict`; :meth:`from_json` reads it back."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Task:
        """Inverse of :meth:`to_dict`. Called on a subclass, the type tag must name that subclass."""
        if not isinstance(data, dict) or "type" not in data:
            raise ValueError(f"Expected a dict with a 'type' key (as written by Task.to_dict), got {data!r}")
        data = dict(data)
        name = data.pop("type")
        task_cls = _lookup_task_class(str(name), cls)
        names = {field.name for field in dataclasses.fields(task_cls)}
        missing, unknown = sorted(names - set(data)), sorted(set(data) - names)
        if missing or unknown:
            raise ValueError(
                f"Malformed {name}: expected the fields {sorted(names)}"
                + (f"; missing {missing}" if missing else "")
                + (f"; unknown {unknown}" if unknown else "")
            )
        try:
            return task_cls(**data)
        except TypeError as e:
            raise ValueError(f"Malformed {name}: {e}") from e

    @classmethod
    def from_json(cls, text: str) -> Task:
        """Inverse of :meth:`to_json`; raises ``ValueError`` on malformed JSON or a task of another type."""
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"Expected a JSON task (as written by Task.to_json), got {text!r}: {e}") from e
        return cls.from_dict(data)

    def as_array(self) -> np.ndarray:
        """The task's numbers, flattened, as float32 (appended to observations by the oracle wrapper)."""
        parts: list[float] = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            parts.extend(value if isinstance(value, tuple) else (value,))
        return np.asarray(parts, dtype=np.float32)


TaskT = TypeVar("TaskT", bound=Task)


def check_task(task: Any, task_type: type[Task], *, where: str = "task") -> Task:
    """Return ``task`` if it is a ``task_type``; raise a ``ValueError`` saying what was expected otherwise."""
    if not isinstance(task, task_type):
        raise ValueError(f"{where}: expected a {task_type.__name__}, got {type(task).__name__} {task!r}")
    return task


class TaskEnv(gym.Env, Generic[TaskT]):
    """Base class of a task distribution: a gymnasium env that can sample and switch tasks.

    Subclasses set ``task_type`` and implement:

    - ``_sample_task(rng) -> task``: draw one task with the given ``numpy.random.Generator``;
    - ``_apply_task(task)``: make the env use ``task`` (store the goal, etc.).

    The current task persists across ``reset()`` (vector envs reset their sub-envs without options). A task the env
    drew itself (at its first reset, no task given) is drawn again from the reseeded RNG by ``reset(seed=...)``, so
    that ``reset(seed=s)`` starts the episode a fresh env's ``reset(seed=s)`` starts; a task given with
    ``reset_task`` or ``options={"task": ...}`` stays.
    ``reset(options={"task": task})`` switches task at reset; ``reset(options={"sample_task": True})`` or
    ``sample_task_on_reset=True`` draws a fresh task at every reset (the task mixture, used to train a
    pretrained baseline). Task sampling uses the env's own RNG, seeded by ``seed`` or ``reset(seed=...)``,
    never numpy's global RNG, and separate from the RNG of initial states.

    Subclasses that override ``reset`` call ``super().reset(seed=seed, options=options)`` first. They set
    ``max_episode_steps`` to the horizon at which they truncate episodes: the algorithms take the horizon from it
    (or from a registered spec's ``max_episode_steps``) and, when neither is set, raise an error asking for
    ``max_episode_steps=...``.

    :param seed: seed of the task RNG (``reset(seed=...)`` reseeds it too)
    :param sample_task_on_reset: draw a new task at every reset (task mixture)
    """

    task_type: ClassVar[type[Task]] = Task
    #: The batched VecEnv class that ``make_task_vec_env`` uses for this distribution (None: DummyVecEnv).
    batched_vec_env_cls: ClassVar[Any] = None
    #: Horizon: the env truncates every episode after this many steps. None (unknown) until a subclass sets it;
    #: declared here so that looking it up never fails with an AttributeError (the algorithms then ask for it).
    max_episode_steps: int | None = None

    def __init__(self, seed: int | None = None, sample_task_on_reset: bool = False) -> None:
        self.sample_task_on_reset = bool(sample_task_on_reset)
        self._task_rng = self._make_task_rng(seed)
        self._task: TaskT | None = None
        # whether the current task was drawn by the env (not given): reset(seed=...) then draws it again
        self._task_drawn = False

    # --- what subclasses implement ---------------------------------------------------------------
    def _sample_task(self, rng: np.random.Generator) -> TaskT:
        raise NotImplementedError

    def _apply_task(self, task: TaskT) -> None:
        raise NotImplementedError

    # --- public task API -------------------------------------------------------------------------
    @staticmethod
    def _make_task_rng(seed: int | None) -> np.random.Generator:
        # A stream distinct from the one gymnasium derives for initial states from the same seed.
        return np.random.default_rng(None if seed is None else [int(seed), 0x7A5C])

    @property
    def task_rng(self) -> np.random.Generator:
        """The RNG that :meth:`sample_tasks` draws from (reseeded by ``reset(seed=...)``)."""
        return self._task_rng

    @task_rng.setter
    def task_rng(self, rng: np.random.Generator) -> None:
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"task_rng must be a numpy.random.Generator, got {type(rng).__name__}")
        self._task_rng = rng

    def spawn_task_rngs(self, n: int) -> list[np.random.Generator]:
        """``n`` independent task RNGs derived from this env's (one per sub-env of a vector env).

        The stream of :meth:`sample_tasks` is not advanced, so the result depends only on how this env was seeded.
        """
        return self._task_rng.spawn(int(n))

    def sample_tasks(self, n: int) -> list[TaskT]:
        """Draw ``n`` tasks from this distribution with the env's own seeded RNG."""
        n = check_int("sample_tasks: n", n)
        return [self._sample_task(self._task_rng) for _ in range(n)]

    def validate_task(self, task: Any) -> TaskT:
        """Raise ``ValueError`` unless ``task`` is a task of this distribution; hook for extra checks."""
        return check_task(task, self.task_type, where=f"{type(self).__name__}.reset_task")  # type: ignore[return-value]

    def reset_task(self, task: TaskT) -> None:
        """Switch to ``task``. The reward uses it from the next step; the initial state from the next reset."""
        task = self.validate_task(task)
        self._apply_task(task)
        self._task = task
        self._task_drawn = False

    @property
    def has_task(self) -> bool:
        """Whether the env has a task (after the first ``reset()`` or ``reset_task()``)."""
        return self._task is not None

    def get_task(self) -> TaskT:
        """The current task; ``RuntimeError`` before the first ``reset()`` / ``reset_task()``."""
        if self._task is None:
            raise RuntimeError(f"{type(self).__name__} has no task yet: call reset_task(task) or reset()")
        return self._task

    # --- reset handling shared by every distribution ----------------------------------------------
    def parse_reset_options(self, options: dict[str, Any] | None) -> tuple[TaskT | None, bool]:
        """Validate ``reset`` options before anything changes.

        :return: ``(task, sample)``: the task given with ``{"task": task}`` (validated) or None, and whether
            ``{"sample_task": True}`` asks for a fresh task
        """
        if options is None:
            return None, False
        if not isinstance(options, dict):
            raise ValueError(f"reset options must be a dict or None, got {type(options).__name__}")
        unknown = set(options) - {"task", "sample_task"}
        if unknown:
            raise ValueError(f"Unknown reset options {sorted(unknown)}; expected 'task' and/or 'sample_task'")
        sample = options.get("sample_task", False)
        if not isinstance(sample, (bool, np.bool_)):  # bool("no") is True: only a flag is a flag
            raise ValueError(f"reset option 'sample_task' must be True or False, got {sample!r}")
        sample = bool(sample)
        if "task" in options and sample:
            raise ValueError("reset options: give either 'task' or 'sample_task', not both")
        task = self.validate_task(options["task"]) if "task" in options else None
        return task, sample

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):  # type: ignore[override]
        """Reseed (if ``seed``), switch task as the options say, and seed gymnasium's ``np_random``.

        Subclasses call this first, then build the initial observation from the (current) task.
        """
        task, sample = self.parse_reset_options(options)  # raises before anything changed
        if seed is not None:
            self._task_rng = self._make_task_rng(seed)
        if task is not None:
            self.reset_task(task)
        elif sample or self.sample_task_on_reset or self._task is None or (seed is not None and self._task_drawn):
            self.reset_task(self.sample_tasks(1)[0])
            self._task_drawn = True
        return super().reset(seed=seed, options=None)


def as_task_list(tasks: Sequence[Any], task_type: type[Task], n: int, where: str) -> list[Task]:
    """Validate a whole list of tasks before anything is applied (nothing half-applied on error)."""
    if isinstance(tasks, (str, bytes, Task)) or not isinstance(tasks, Sequence):
        tasks = list(tasks) if isinstance(tasks, np.ndarray) else tasks
        if not isinstance(tasks, list):
            raise ValueError(f"{where}: expected a sequence of {n} {task_type.__name__}, got {type(tasks).__name__}")
    if len(tasks) != n:
        raise ValueError(f"{where}: expected {n} tasks (one per sub-env), got {len(tasks)}")
    return [check_task(t, task_type, where=f"{where}[{i}]") for i, t in enumerate(tasks)]
