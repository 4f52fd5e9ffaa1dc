"""Progress of a long download: a bar on a terminal, a log line every 10% otherwise (CI logs, files)."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator

log = logging.getLogger("cnnlab.download")

UNKNOWN_TOTAL_STEP = 100 * 2**20  # without a Content-Length: a log line every 100 MiB


def on_terminal() -> bool:
    return sys.stderr.isatty()


@contextlib.contextmanager
def byte_progress(label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A function to call with each block's byte count while `label` downloads (`total` bytes, if known)."""
    if on_terminal():
        try:
            from tqdm import tqdm  # installed with DVC and MLflow
        except ImportError:
            pass
        else:
            bar = tqdm(total=total or None, desc=label, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr)
            try:
                yield bar.update
            finally:
                bar.close()
            return
    yield _log_lines(label, total)


def _log_lines(label: str, total: int | None) -> Callable[[int], None]:
    done, step = 0, (total / 10 if total else UNKNOWN_TOTAL_STEP)
    next_report = step

    def update(count: int) -> None:
        nonlocal done, next_report
        done += count
        if done < next_report:
            return
        if total:
            log.info("  %s: %d%% of %.1f MB", label, 100 * done // total, total / 1e6)
        else:
            log.info("  %s: %.0f MB", label, done / 1e6)
        next_report = (done // step + 1) * step  # one line however many steps a block crosses

    return update
