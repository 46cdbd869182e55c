"""One Ctrl-C (or SIGTERM) stops training cleanly; a second one interrupts at once.

A ``KeyboardInterrupt`` raised at an arbitrary bytecode can land inside the clip source's
locks, a background thread's hand-off or a checkpoint write, and leave the process unable
to finish (a learner once ignored two SIGINTs and needed SIGTERM). ``GracefulStop``
instead turns the first SIGINT/SIGTERM into a flag that the training loop reads between
updates: the current rollout and update finish, the checkpoint is written, outcomes are
flushed and the process exits. A second signal restores the default behaviour
(``KeyboardInterrupt`` / termination) for a user who does not want to wait.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulStop:
    """Context manager: while active, the first SIGINT/SIGTERM only sets ``requested``.

    Installs its handlers only in the main thread (Python delivers signals there); used
    from another thread it is a flag nobody sets.
    """

    def __init__(self) -> None:
        self.requested = False
        """True once a stop was asked for."""
        self.signal_number: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:  # the second signal: stop waiting
            self._restore()
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.raise_signal(signum)
            return
        self.requested = True
        self.signal_number = signum
        logger.warning(
            "%s: finishing this update, saving the checkpoint and stopping "
            "(send it again to stop at once)",
            signal.Signals(signum).name,
        )

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._restore()


__all__ = ["GracefulStop"]
