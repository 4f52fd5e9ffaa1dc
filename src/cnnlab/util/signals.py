"""Stop signals (Ctrl-C, SIGTERM, SIGHUP) turned into a KeyboardInterrupt where stopping is safe, so that a
stopped stage always gets to mark its run FAILED and never leaves half-written outputs."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_stop_requested: list[signal.Signals] = []  # the stop signals this stage has received
_at_safe_points: list[bool] = []  # while set, a stop signal is recorded here and raised at the next safe point


def _raise_on_signal(signum: int, frame: Any) -> None:
    _stop_requested.append(signal.Signals(signum))
    if not _at_safe_points:
        raise KeyboardInterrupt(f"stopped by signal {signal.Signals(signum).name}")


@contextlib.contextmanager
def stops_at_safe_points() -> Iterator[None]:
    """Inside, a stop signal is recorded rather than raised where it lands: `raise_if_stop_requested` raises
    it (training calls it before every batch), and so does leaving the block.

    Raised where it lands, the KeyboardInterrupt can cut through TensorFlow's Python code half way (a
    `__del__` freeing a native object, an iterator being built): a train stage SIGTERM'd as an epoch began
    died of heap corruption ("malloc_consolidate(): invalid chunk size") before it could mark its run FAILED.
    """
    _at_safe_points.append(True)
    try:
        yield
    finally:
        _at_safe_points.pop()
    raise_if_stop_requested()


def raise_if_stop_requested() -> None:
    """Raise again a stop signal that Python swallowed.

    A signal whose handler runs inside a weakref callback or a `__del__` (TensorFlow
    and Keras have many) only prints "Exception ignored ... KeyboardInterrupt" and
    the stage would go on; training calls this at every batch so Ctrl-C always stops it.
    """
    if _stop_requested:
        raise KeyboardInterrupt(f"stopped by signal {_stop_requested[-1].name}")


@contextlib.contextmanager
def stop_signals_raised() -> Iterator[None]:
    """Inside, a stop signal raises KeyboardInterrupt (or is held to a safe point, see `stops_at_safe_points`);
    the previous handlers are back afterwards."""
    _stop_requested.clear()
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig, handler in previous.items():
        if handler is not signal.SIG_IGN:  # nohup or a background job asked for it to be ignored: keep that
            signal.signal(sig, _raise_on_signal)
    try:
        yield
    finally:
        _stop_requested.clear()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def ignore_stop_signals() -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
