"""Small helpers shared across the package: argument checks with one message form, finiteness, timing.

This module imports nothing from ``sb3_meta``, so that any module may use it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch as th

__all__ = ["all_finite", "check_int", "check_positive_float", "check_step_sizes", "stopwatch"]


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an ``int`` if it is an integer ``>= minimum`` (bools refused); ``ValueError`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_positive_float(name: str, value: Any) -> float:
    """``value`` as a ``float`` if it is a positive finite number (bools refused); ``ValueError`` otherwise."""
    if isinstance(value, bool):  # float(True) would pass as 1.0
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}") from None
    if not np.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return number


def check_step_sizes(adapt_lr: Any, n_steps: int, default: float) -> list[float]:
    """The step size of each of ``n_steps`` adaptation steps: ``default`` for all, one number for all, or one per step."""
    if adapt_lr is None:
        return [default] * n_steps
    if np.ndim(adapt_lr) == 0:
        return [check_positive_float("adapt_lr", adapt_lr)] * n_steps
    if not isinstance(adapt_lr, (Sequence, np.ndarray)) or len(adapt_lr) != n_steps:
        raise ValueError(
            f"adapt_lr must be a positive number or one positive number per adaptation step ({n_steps}), "
            f"got {list(adapt_lr)!r}"
        )
    return [check_positive_float("adapt_lr", value) for value in adapt_lr]


def all_finite(tensors: Mapping[str, th.Tensor]) -> bool:
    """Whether every tensor of a parameter dict is finite."""
    return all(bool(th.isfinite(v).all()) for v in tensors.values())


@contextlib.contextmanager
def stopwatch(times: dict[str, float], key: str) -> Iterator[None]:
    """Add the seconds spent in the ``with`` block to ``times[key]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        times[key] = times.get(key, 0.0) + time.perf_counter() - start
