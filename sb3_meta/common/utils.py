"""Small helpers shared across the package: argument checks with one message form, finiteness, timing.

This module imports nothing from ``sb3_meta``, so that any module may use it.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch as th

__all__ = ["all_finite", "atomic_write", "check_int", "check_positive_float", "check_step_sizes", "stopwatch"]


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


def atomic_write(path: str | os.PathLike[str], write: Callable[[io.BufferedWriter], Any]) -> None:
    """Write the file ``path`` all or nothing: ``write(file)`` writes a temporary file in the same folder, which is
    then flushed, fsynced and renamed over ``path`` (``os.replace``, atomic on POSIX and Windows).

    Until the new content is complete and on disk, ``path`` holds its previous content (or does not exist),
    whatever happens: an error, a kill, a power cut. On an error the temporary file is removed; a kill leaves
    it behind, hidden (``.<stem>.<random>.tmp<suffix>`` next to ``path``). The folder is created if missing.

    :param write: writes the content to the binary file object it is given (e.g. ``model.save``, ``np.savez``)
    :raises IsADirectoryError: ``path`` is a folder
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path!r} is a folder: give a file path, e.g. {os.path.join(path, 'model.zip')!r}")
    folder, name = os.path.split(path)
    stem, suffix = os.path.splitext(name)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{stem}.{secrets.token_hex(6)}.tmp{suffix}")
    try:
        with open(tmp, "xb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder: str) -> None:
    """Make a rename in ``folder`` durable (POSIX; Windows cannot open a folder, and needs no such step)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
