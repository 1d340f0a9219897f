"""Graceful stop on SIGTERM, SIGINT and SIGUSR1 (SLURM's warning signal).

``GracefulStop`` turns those signals into a flag instead of killing the process, so a long loop can
finish its current step, save a checkpoint and exit 75 (``mirage_cli.errors.Interrupted``)::

    with GracefulStop() as stop:
        for step in steps:
            denoise(step)
            if stop.requested:
                save_mid_chunk_checkpoint()
                raise Interrupted(f"stopped by {stop.signal_name}; checkpoint saved")

Repeated SIGTERM/SIGUSR1 are harmless (the flag is already set). A second SIGINT means the user
insists: it raises ``KeyboardInterrupt`` at once. The previous handlers are restored on exit and
can be chained to with ``previous_handler`` (``mirage batch`` uses this to hand over to submitit's
requeue handler after its child process has checkpointed).

Signal handlers can only be installed from the main thread; elsewhere ``GracefulStop`` installs
nothing, logs a warning, and its flag can still be set with ``request``.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class GracefulStop:
    """Context manager: catch ``signals`` and record the first one in ``requested``/``signal_name``.

    Attributes:
        requested: True once a stop signal arrived (or ``request`` was called).
        signal_name: name of the first signal ("SIGTERM", ...), or None.
        signum: its number, or None.
        count: number of stop signals received so far.
    """

    def __init__(self, signals: Iterable[int] = DEFAULT_SIGNALS, on_signal: Callable[[int], None] | None = None):
        self.signals = tuple(dict.fromkeys(int(s) for s in signals))
        self.on_signal = on_signal
        self.requested = False
        self.signal_name: str | None = None
        self.signum: int | None = None
        self.count = 0
        self._sigints = 0
        self._event = threading.Event()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is not threading.main_thread():
            log.warning("GracefulStop outside the main thread: signal handlers not installed")
            return self
        try:
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._handle)
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, *exc: Any) -> bool:
        self._restore()
        return False

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def previous_handler(self, signum: int) -> Any:
        """The handler that was installed for ``signum`` before this context (None if not replaced)."""
        return self._previous.get(int(signum))

    def request(self, signum: int | None = None) -> None:
        """Set the stop flag as if ``signum`` had arrived (usable from any thread)."""
        if not self.requested:
            self.signum = signum
            self.signal_name = signal.Signals(signum).name if signum is not None else "request"
        self.requested = True
        self._event.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until a stop is requested or ``timeout`` seconds pass; returns ``requested``."""
        self._event.wait(timeout)
        return self.requested

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if signum == signal.SIGINT:
            self._sigints += 1
            if self._sigints >= 2:
                raise KeyboardInterrupt("second SIGINT while stopping")
        first = not self.requested
        self.request(signum)
        if first:
            log.warning("received %s: stopping after the current step", signal.Signals(signum).name)
        if self.on_signal is not None:
            self.on_signal(signum)
