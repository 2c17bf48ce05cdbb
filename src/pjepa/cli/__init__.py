"""Command-line interface (``pjepa``)."""

import signal
import sys

_interrupted = False


def _on_sigint(signum, frame):  # noqa: ANN001 (a signal handler's signature)
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def entry() -> None:
    """The ``pjepa`` console script: ``main`` behind a Ctrl-C guard that also covers importing it (torch
    takes a second or two to import). An interrupt there ends with one line, not a traceback, and so does
    an error it causes (an import cut short by Ctrl-C can fail again later with an ImportError)."""
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        from pjepa.cli.main import main

        if _interrupted:  # the KeyboardInterrupt was swallowed by an import that catches everything
            raise KeyboardInterrupt
        code = main()
    except KeyboardInterrupt:
        code = _interrupt()
    except Exception:
        if not _interrupted:
            raise
        code = _interrupt()
    sys.exit(code)


def interrupted() -> bool:
    """Whether Ctrl-C was pressed since ``entry`` started (an interrupt an import swallowed still counts)."""
    return _interrupted


def _interrupt() -> int:
    print("pjepa: interrupted", file=sys.stderr)
    return 130
