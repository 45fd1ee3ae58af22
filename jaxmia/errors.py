"""The one exception type for mistakes a user can make (config, CLI, data, paths).

The command line turns it into a single line on stderr and exit code 2; anything
else that goes wrong is a bug and keeps its traceback.
"""

import argparse
import sys


class OneLineParser(argparse.ArgumentParser):
    """argparse, except that a bad command line is one line on stderr and exit code 2
    (``<prog>: error: <what> (see --help)``) instead of the usage block."""

    def error(self, message):
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


class UserError(Exception):
    """Bad input from the user: the message is shown as is, on one line."""


class NothingToAnalyse(UserError):
    """The saved outputs leave no model (or no target) to compute any statistic from:
    every model diverged, or every one is marked unused.  Every kind says it in the
    same words, one line and exit code 2, from ``jaxmia run`` and ``jaxmia analyze``."""

    def __init__(self, what: str):
        super().__init__(f"nothing to analyse: {what}; lower lr, or check the data")


class NonFiniteLoss(RuntimeError):
    """A model's loss became NaN or infinite and the config says to stop (the CLI
    exits 1 with one line)."""


def show(value, limit: int = 80) -> str:
    """A short repr of a user's value for an error message: at most ``limit`` characters.

    reprlib bounds the work as well as the length, so a YAML alias bomb (a list
    that holds itself a million times over) is shown in microseconds.
    """
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxset = 2, 4, 4, 4, 4
    r.maxstring, r.maxother, r.maxlong = limit, limit, limit
    text = r.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
