"""Ctrl-C and SIGTERM as a request to stop, checked where stopping is safe.

A signal only sets a flag; the run asks ``requested()`` between stages,
between chunks and between the epochs of a chunk, keeps every finished chunk
and exits 130 (SIGINT) or 143 (SIGTERM).  A KeyboardInterrupt raised from
inside JAX (a garbage-collection callback, a compile) could be swallowed
there and the run would go on to the end; a flag cannot be lost.  A second
signal ends the process at once: finished chunks are on disk already, written
atomically, and the kernel releases the run folder's lock.
"""

from __future__ import annotations

import contextlib
import os
import signal


class StopRequested(Exception):
    """Raised at a safe point after a stop signal; ``exit_code`` is 128 + signal number."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum


class StopFlag:
    """Set by SIGINT/SIGTERM while ``installed``; never set when not installed."""

    def __init__(self, again: str = "finished chunks are kept"):
        self.signum: int | None = None
        # What the line of a second signal says is kept (the run: its chunks).
        self._again = f"jaxmia: interrupted again: stopped at once; {again}\n".encode()

    def requested(self) -> bool:
        return self.signum is not None

    def check(self) -> None:
        if self.signum is not None:
            raise StopRequested(self.signum)

    def _handle(self, signum, frame) -> None:
        del frame
        if self.signum is not None:  # the second signal: leave now
            os.write(2, self._again)
            os._exit(128 + signum)
        # Quiet here: the run says one line when it has stopped (run.py).
        self.signum = signum

    @contextlib.contextmanager
    def installed(self):
        """Handles SIGINT and SIGTERM inside the block (main thread only)."""
        old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
