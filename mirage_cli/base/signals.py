"""Graceful stop on SIGTERM, SIGINT and SIGUSR1 (SLURM's warning signal).

``GracefulStop`` turns those signals into a flag instead of killing the process, so a long loop can
finish its current step, save a checkpoint and exit 75 (``mirage_cli.base.errors.Interrupted``)::

    with GracefulStop() as stop:
        for step in steps:
            denoise(step)
            if stop.requested:
                save_mid_chunk_checkpoint()
                raise Interrupted(f"stopped by {stop.signal_name}; checkpoint saved")

Where nothing is being written (imports, checking inputs, loading the model), waiting for the
work to finish would only delay the stop: inside ``stop.at_once("while loading the model")`` the
first stop signal raises ``Interrupted`` (exit 75, "nothing needed saving") at once instead. Between
stages, ``stop.check(what)`` raises it when a stop arrived meanwhile.

Repeated SIGTERM/SIGUSR1 are harmless (the flag is already set, and only the first signal raises).
A second SIGINT outside ``at_once`` means the user insists: it raises ``KeyboardInterrupt`` at once.
The previous handlers are restored on exit and can be chained to with ``previous_handler``
(``mirage batch`` uses this to hand over to submitit's requeue handler after its child process has
checkpointed).

``mirage``'s own process installs one for its whole life before anything slow is imported
(``install_for_process``, called by ``mirage_cli.cli.main.main``): a stop at any moment of a command ends
in an exit code, never in a death by the signal, also while the interpreter shuts down.

Signal handlers can only be installed from the main thread; elsewhere ``GracefulStop`` installs
nothing, logs a warning, and its flag can still be set with ``request``.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from mirage_cli.base.errors import Interrupted

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
        self._at_once: str | None = None
        self._settled = False

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

    @contextmanager
    def at_once(self, what: str) -> Iterator[GracefulStop]:
        """Inside, the first stop signal raises ``Interrupted`` at once (``what``: "while loading the
        model"); a stop that arrived before raises on entry. Use it only where nothing is written."""
        self.check(what)
        outer, self._at_once = self._at_once, what
        try:
            yield self
        finally:
            self._at_once = outer

    @contextmanager
    def deferred(self) -> Iterator[GracefulStop]:
        """Inside, a stop signal only sets the flag (the default, and what ``at_once`` narrows)."""
        outer, self._at_once = self._at_once, None
        try:
            yield self
        finally:
            self._at_once = outer

    def check(self, what: str) -> None:
        """Raise ``Interrupted`` if a stop was requested (``what``: where the render was)."""
        if self.requested:
            raise self.interrupted(what)

    def interrupted(self, what: str) -> Interrupted:
        """The ``Interrupted`` of a stop ``what`` (before any checkpoint of this process was needed)."""
        return Interrupted(f"stopped by {self.signal_name} {what}; nothing needed saving, run the same command again")

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
        first = not self.requested
        if signum == signal.SIGINT:
            self._sigints += 1
            if self._sigints >= 2 and self._at_once is None and not self._settled:
                raise KeyboardInterrupt("second SIGINT while stopping")
        self.request(signum)
        if self.on_signal is not None:
            self.on_signal(signum)
        if first and self._at_once is not None:
            raise self.interrupted(self._at_once)
        if first:
            log.warning("received %s: stopping after the current step", signal.Signals(signum).name)

    def settle(self) -> None:
        """From now on only record signals (never raise): the command's outcome is decided."""
        self._at_once = None
        self._settled = True


_process_stop: GracefulStop | None = None


def install_for_process() -> GracefulStop:
    """Install the stop handlers of this whole process (never restored) and return them; they start
    in ``at_once("while starting")`` mode until a command narrows them."""
    global _process_stop
    if _process_stop is None:
        stop = GracefulStop()
        stop.__enter__()
        stop._at_once = "while starting"
        _process_stop = stop
    return _process_stop


def release_process_stop() -> None:
    """Restore the handlers ``install_for_process`` replaced (for callers of ``mirage_cli.cli.main.main``
    that go on running afterwards, such as tests)."""
    global _process_stop
    if _process_stop is not None:
        _process_stop._restore()
        _process_stop = None


def process_stop() -> GracefulStop | None:
    """The handlers ``install_for_process`` installed, or None (e.g. the CLI run inside tests)."""
    return _process_stop
