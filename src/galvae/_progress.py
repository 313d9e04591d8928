"""Progress bars on a terminal (or in Jupyter), one log line per stage anywhere else.

A bar redrawn in place helps a person watching; sent to a batch job's log file, every redraw becomes a
line and a stage writes dozens. So :class:`tqdm` here draws only when stderr is a terminal or the code
runs in a Jupyter kernel; elsewhere it stays silent and, when it closes, logs one INFO line on the
``galvae.progress`` logger: what ran, how many items, how long. The command line shows those lines
at its default verbosity (``-q`` turns both off, as it turns off the bars).
"""

from __future__ import annotations

import logging
import sys
import time

from tqdm.auto import tqdm as _tqdm

log = logging.getLogger("galvae.progress")


def interactive() -> bool:
    """True when a progress bar can redraw in place: stderr is a terminal, or a Jupyter kernel runs us."""
    try:
        if sys.stderr is not None and sys.stderr.isatty():
            return True
    except (AttributeError, ValueError):  # a closed or replaced stream
        pass
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ip = shell.get_ipython() if hasattr(shell, "get_ipython") else None
    return type(ip).__name__ == "ZMQInteractiveShell"


class tqdm(_tqdm):  # noqa: N801 — a drop-in for tqdm.auto.tqdm
    """``tqdm.auto.tqdm`` drawn only where it can redraw in place; elsewhere one log line at the end."""

    def __init__(self, iterable=None, *args, disable: bool = False, **kwargs):
        self._wanted = not disable
        self._count = int(kwargs.get("initial", 0) or 0)
        self._label = kwargs.get("desc") or "progress"
        self._unit = kwargs.get("unit", "it")
        self._expected = kwargs.get("total")
        self._started = time.perf_counter()
        self._reported = False
        super().__init__(iterable, *args, disable=disable or not interactive(), **kwargs)
        self._silent = self.disable  # tqdm sets disable when it closes: remember whether a bar was drawn

    def __iter__(self):
        if not self._silent:
            yield from super().__iter__()
            return
        for item in self.iterable:
            self._count += 1
            yield item
        self.close()

    def update(self, n=1):
        self._count += n
        return super().update(n)

    def close(self):
        if self._wanted and self._silent and not self._reported:
            self._reported = True
            total = f"/{self._expected:,}" if isinstance(self._expected, int) else ""
            log.info("%s: %s%s %s in %.1f s", self._label, f"{self._count:,}", total, self._unit,
                     time.perf_counter() - self._started)
        return super().close()
