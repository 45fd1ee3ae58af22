"""Config keys as records: a name, a default, a check and whether it decides the models.

``config.py`` builds the ``Config`` dataclass from the keys every run has and the
keys each experiment kind declares in its own folder (``kinds/<kind>/``), so a
kind brings its keys with it.  A key's ``check`` validates its value alone and
raises ``UserError`` with one line that says what is allowed; checks that relate
several keys live in ``config.py`` (common keys) and in each kind's ``validate``.

Nothing here imports more than the standard library, so that reading a config
stays cheap (no JAX, no scipy).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from jaxmia.errors import UserError, show

__all__ = ["Key", "choice", "flag", "integer", "integer_list", "number"]


@dataclasses.dataclass(frozen=True)
class Key:
    """One YAML key of the config.

    Attributes:
      name: the key, as written in the YAML file and on ``Config``.
      default: its value when the file leaves it out.
      check: ``check(name, value)`` raises UserError if the value is not allowed.
      hashed: True when the value decides what the models compute, so that a run
        folder holding models of another value is another run (the run hash).
        False for keys that only say how many models there are, how the work is
        split, or how the outputs are analysed: those can change between runs of
        one folder (a run can grow, or be analysed again).
      hash_default: False for a hashed key added after run folders existed whose
        default keeps today's models: it enters the run hash only when it differs
        from its default, so those folders keep their hash and resume.
      doc: one line for error messages and the README.
    """

    name: str
    default: Any
    check: Callable[[str, Any], None]
    hashed: bool = True
    doc: str = ""
    hash_default: bool = True


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def integer(lo: int | None = None, hi: int | None = None, *, allow_none: bool = False):
    """A check for an integer in [lo, hi] (either end open when None), or null."""

    def check(name, v):
        if v is None and allow_none:
            return
        what = f"an integer >= {lo}" if lo is not None else "an integer"
        if hi is not None:
            what = f"an integer in [{lo}, {hi:,}]"
        if allow_none:
            what += " or null"
        if not _is_int(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
            raise UserError(f"{name} must be {what}, got {show(v)}")

    return check


def number(lo: float, hi: float, *, lo_open: bool, hi_open: bool, what: str | None = None):
    """A check for a finite number in the interval (lo or [lo, hi) or hi], as the flags say."""

    def check(name, v):
        if not (isinstance(v, (int, float)) and not isinstance(v, bool)) or not math.isfinite(v):
            raise UserError(f"{name} must be a finite number, got {show(v)}")
        low_ok = v > lo if lo_open else v >= lo
        high_ok = v < hi if hi_open else v <= hi
        if not (low_ok and high_ok):
            span = what or (
                f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
                if math.isfinite(hi)
                else f"{'>' if lo_open else '>='} {lo:g}"
            )
            raise UserError(f"{name} must be {span}, got {v}")

    return check


def choice(names):
    """A check for one of ``names`` (a tuple of strings, or a callable returning one)."""

    def check(name, v):
        allowed = names() if callable(names) else names
        if not isinstance(v, str) or v not in allowed:
            raise UserError(f"{name} must be one of {', '.join(allowed)}; got {show(v)}")

    return check


def flag(name, v) -> None:
    """The check of a true/false key."""
    if not isinstance(v, bool):
        raise UserError(f"{name} must be true or false, got {show(v)}")


def integer_list(max_len: int):
    """A check for null or a non-empty list of distinct integers >= 0 (at most max_len)."""

    def check(name, t):
        if t is None:
            return
        if not isinstance(t, list) or not t or not all(_is_int(i) and i >= 0 for i in t):
            raise UserError(
                f"{name} must be a non-empty list of training-set indices, got {show(t)}"
            )
        if len(set(t)) != len(t):
            raise UserError(f"{name} must not repeat an index")
        if len(t) > max_len:
            raise UserError(f"{name} holds at most {max_len:,} indices, got {len(t):,}")

    return check
