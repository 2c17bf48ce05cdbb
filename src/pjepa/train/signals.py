"""Stop cleanly on SIGTERM / SIGINT: finish the step, checkpoint, exit with 128 + the signal's number.

Schedulers and ``timeout`` send SIGTERM, a person presses Ctrl-C (SIGINT). Raising inside a
step would leave weights one step ahead of the step counter; instead the handler only
records the signal, and the loop stops at the next step boundary, checks the window for
non-finite values and saves ``checkpoints/last`` (weights, optimiser, EMA teacher, RNG and
step agree), then returns. A second Ctrl-C stops at once without saving (the last
checkpoint is kept). Exit codes: 143 (SIGTERM), 130 (SIGINT), as a shell reports them.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

#: The signals that stop training cleanly, and the process exit code each leads to.
EXIT_CODES: dict[int, int] = {signal.SIGTERM: 128 + signal.SIGTERM, signal.SIGINT: 128 + signal.SIGINT}


class StopSignals:
    """Context manager: while active, SIGTERM / SIGINT set ``received`` instead of killing the process."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    @property
    def name(self) -> str | None:
        return signal.Signals(self.received).name if self.received is not None else None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: the person wants out now
        self.received = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # handlers install only there
            for sig in EXIT_CODES:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()
