"""Progress reports that suit where the output goes.

On a terminal a tqdm bar is redrawn in place. Anywhere else (a log file, a
batch job's output, a pipe) a redrawn bar leaves thousands of carriage-return
frames in one line, so :class:`LogProgress` prints a plain line now and then
instead, and one at the end.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO

__all__ = ["LogProgress", "progress_bar"]


class LogProgress:
    """A progress report for output that is not a terminal.

    Prints ``desc: n/total unit (p %), elapsed, ~left, postfix`` at most once
    every ``interval`` seconds as :meth:`update` moves it, and a last line at
    :meth:`close`. Offers the part of tqdm's interface the library uses:
    ``n``, ``total``, ``disable``, ``update``, ``set_postfix``,
    ``set_postfix_str``, ``write`` and ``close``.
    """

    disable = False

    def __init__(self, total: int, initial: int = 0, desc: str = "", unit: str = "batch",
                 file: Optional[TextIO] = None, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self.file, self.interval, self._clock = file, interval, clock
        self._start_n, self._start = initial, clock()
        self._printed, self._postfix, self._closed = self._start, "", False

    def update(self, n: int = 1) -> None:
        """Move ``n`` steps on; print a line when ``interval`` seconds have passed since the last."""
        self.n += n
        if self._clock() - self._printed >= self.interval:
            self._print()

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **values) -> None:
        """Show ``key=value`` pairs after the count (printed with the next line, not at once)."""
        values = {**(ordered_dict or {}), **values}
        self._postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        """Show ``s`` after the count (printed with the next line, not at once)."""
        self._postfix = s

    def write(self, line: str, file: Optional[TextIO] = None) -> None:
        """Print ``line`` to ``file`` (standard output by default), as tqdm's ``write`` does."""
        print(line, file=file or sys.stdout, flush=True)

    def close(self) -> None:
        """Print the last line, once."""
        if not self._closed:
            self._closed = True
            self._print()

    def _print(self) -> None:
        from tqdm import tqdm

        now = self._clock()
        self._printed = now
        elapsed = now - self._start
        parts = [f"{self.n}/{self.total} {self.unit}"
                 + (f" ({100 * self.n / self.total:.0f} %)" if self.total else ""),
                 f"{tqdm.format_interval(elapsed)} elapsed"]
        done = self.n - self._start_n
        if done > 0 and self.total and self.n < self.total:
            parts.append(f"~{tqdm.format_interval(elapsed / done * (self.total - self.n))} left")
        if self._postfix:
            parts.append(self._postfix)
        print(f"{self.desc + ': ' if self.desc else ''}{', '.join(parts)}", file=self.file or sys.stderr, flush=True)


def progress_bar(total: int, initial: int = 0, desc: str = "", unit: str = "batch", enabled: bool = True,
                 file: Optional[TextIO] = None, interval: float = 60.0, **tqdm_options):
    """A tqdm bar when ``file`` (standard error by default) is a terminal or the code runs in a
    notebook (tqdm's widget), else a :class:`LogProgress`.

    ``enabled=False`` gives a disabled tqdm bar (it shows nothing).
    ``tqdm_options`` (``position``, ``smoothing``, ...) go to tqdm only.
    """
    from tqdm.auto import tqdm, asyncio_tqdm

    stream = file or sys.stderr
    in_notebook = tqdm is not asyncio_tqdm
    if enabled and not in_notebook and not _is_terminal(stream):
        return LogProgress(total, initial, desc=desc, unit=unit, file=file, interval=interval)
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled, file=file,
                dynamic_ncols=True, **tqdm_options)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
