"""The arrays files a run folder keeps, described field by field, and the one checker of them.

Each experiment kind declares its arrays file as a tuple of ``Field``s
(kinds/<kind>/arrays.py): a name, a dtype kind and a shape written with
symbols (``("M", "T", "C")``: M models, T targets, C classes), and what its
values must be: a range, and finite values in the rows a mask field marks as
used.  ``check`` verifies a dict of arrays against such a schema: every
required field present, of its dtype kind, with a shape whose symbols agree
across fields and with the sizes the run's own record gives (run.json), values
in range, nothing non-finite where a model is used.  It is what ``jaxmia
analyze`` runs before it trusts a file a user may have damaged, edited or
mixed up, and what the analyses run before they index.

numpy only.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["Field", "check", "check_flag", "finite_rows"]

_KINDS = {
    "float": lambda d: np.issubdtype(d, np.floating),
    "int": lambda d: np.issubdtype(d, np.integer),
    "bool": lambda d: d == np.bool_,
    "uint8": lambda d: d == np.uint8,
    "str": lambda d: d.kind == "U",
}


@dataclasses.dataclass(frozen=True)
class Field:
    """One array of an arrays file.

    Attributes:
      name: the key in the npz file.
      kind: "float", "int" (any integer dtype), "bool", "uint8" or "str".
      shape: one entry per axis: a symbol shared with other fields (a str) or a
        fixed length (an int); () for a scalar.
      doc: what it holds, for the README and error messages.
      required: False for a field older files may lack (the reader then
        supplies its default).
      at_least, at_most: bounds of its finite values (None: none).
      below: ints only: every value is below this (an int, or a size symbol such as
        "C": a class index is below the number of classes; "N", the training set's
        size, bounds a training-set index).  A symbol of unknown size checks nothing.
      finite_where: the name of a bool field whose True entries mark rows (the
        leading axes) of this field that must be finite: a model that is used has
        finite outputs.
    """

    name: str
    kind: str
    shape: tuple[str | int, ...]
    doc: str = ""
    required: bool = True
    at_least: float | None = None
    at_most: float | None = None
    below: str | int | None = None
    finite_where: str | None = None

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"unknown dtype kind {self.kind!r} for {self.name}")


def _describe(shape, sizes) -> str:
    return "(" + ", ".join(f"{s}={sizes[s]}" if s in sizes else str(s) for s in shape) + ")"


def check(
    arrays,
    schema,
    sizes: dict[str, int] | None = None,
    *,
    given_by: str = "run.json",
    minimum: dict[str, int] | None = None,
) -> dict[str, int]:
    """Checks ``arrays`` (a dict of array-likes) against ``schema`` (Fields).

    Args:
      arrays: e.g. the contents of an npz file.
      schema: tuple of Field.
      sizes: symbol sizes already known (e.g. from run.json); a field must agree.
      given_by: where ``sizes`` come from, for the message.
      minimum: the least size a symbol may have ({"l": 1}: at least one round).

    Returns:
      dict symbol -> size, every symbol a present field uses.

    Raises:
      ValueError: the first problem, in one line: "lack a, b" for missing
        required fields, "<name> must be <kind> ..." for a wrong dtype, "<name>
        must have shape (...)" for a shape that disagrees with the others or with
        ``sizes``, "<name> must be ..." for a value out of range, "<name> has a
        non-finite value ..." where a used model's output is NaN or infinite.
    """
    missing = [f.name for f in schema if f.required and f.name not in arrays]
    if missing:
        raise ValueError(f"lack {', '.join(missing)}")
    given = dict(sizes or {})
    known = dict(given)
    source = dict.fromkeys(given, given_by)  # symbol -> what set its size
    # A symbol run.json does not give takes the size most fields agree on, so that the
    # one damaged field is the one named, whichever comes first in the schema.
    votes: dict[str, list[int]] = {}
    for f in schema:
        shape = np.shape(arrays[f.name]) if f.name in arrays else None
        if shape is None or len(shape) != len(f.shape):
            continue
        for sym, n in zip(f.shape, shape, strict=True):
            if isinstance(sym, str) and sym not in given:
                votes.setdefault(sym, []).append(n)
    for sym, ns in votes.items():
        counts = {n: ns.count(n) for n in ns}
        best = max(counts.values())
        if best < len(ns) and list(counts.values()).count(best) == 1:
            known[sym] = max(counts, key=counts.get)
            source[sym] = f"{best} of the {len(ns)} fields that have it"
    values = {}
    for f in schema:
        if f.name not in arrays:
            continue
        a = np.asarray(arrays[f.name])
        if not _KINDS[f.kind](a.dtype):
            raise ValueError(f"{f.name} must be {f.kind}{list(f.shape)}, got {a.dtype}")
        if a.ndim != len(f.shape):
            raise ValueError(
                f"{f.name} must have shape {_describe(f.shape, known)}, got {tuple(a.shape)}"
            )
        for axis, (sym, n) in enumerate(zip(f.shape, a.shape, strict=True)):
            if isinstance(sym, str) and sym not in known:
                known[sym], source[sym] = n, f.name
            want = sym if isinstance(sym, int) else known[sym]
            if n != want:
                whence = f"; {sym}={want} from {source[sym]}" if isinstance(sym, str) else ""
                raise ValueError(
                    f"{f.name} must have shape {_describe(f.shape, known)}, got "
                    f"{tuple(a.shape)} (axis {axis}{whence})"
                )
        values[f.name] = a
    for sym, least in (minimum or {}).items():
        if sym in known and known[sym] < least:
            raise ValueError(f"{sym} is {known[sym]}; a run has at least {least}")
    for f in schema:
        if f.name in values:
            _check_values(f, values, known)
    return known


def _check_values(f: Field, values: dict, known: dict) -> None:
    """The range and finiteness rules of field ``f`` (its shape is already checked)."""
    a = values[f.name]
    if f.finite_where is not None and f.finite_where in values:
        used = np.asarray(values[f.finite_where], bool)
        rows = a[used] if a.shape[: used.ndim] == used.shape else a
        bad = ~np.isfinite(rows.reshape(rows.shape[0], -1)).all(axis=1) if rows.size else []
        if np.any(bad):
            where = np.argwhere(used)[int(np.argmax(bad))]
            raise ValueError(
                f"{f.name} has a non-finite value at {tuple(int(i) for i in where)}, where "
                f"{f.finite_where} is True (a used model's outputs are finite)"
            )
    if f.kind == "str" or f.kind == "bool" or a.size == 0:
        return
    finite = a[np.isfinite(a)] if f.kind == "float" else a
    if finite.size == 0:
        return
    lo, hi = finite.min(), finite.max()
    bound = known.get(f.below) if isinstance(f.below, str) else f.below
    label = f"{f.below}={bound}" if isinstance(f.below, str) else str(bound)
    if f.at_least is not None and lo < f.at_least:
        raise ValueError(f"{f.name} must be >= {f.at_least:g}, got {lo:g}")
    if f.at_most is not None and hi > f.at_most:
        raise ValueError(f"{f.name} must be <= {f.at_most:g}, got {hi:g}")
    if bound is not None and hi >= bound:
        raise ValueError(f"{f.name} must be below {label}, got {hi}")


def finite_rows(*arrays, ndim: int) -> np.ndarray:
    """bool[leading ndim axes]: every value of every array in that row is finite."""
    ok = None
    for a in arrays:
        a = np.asarray(a)
        rest = int(np.prod(a.shape[ndim:], dtype=np.int64))
        row = np.isfinite(a.reshape(a.shape[:ndim] + (rest,))).all(axis=-1)
        ok = row if ok is None else ok & row
    return ok


def check_flag(name: str, flag, outputs_finite, trained=None, trained_name: str = "") -> None:
    """A saved finiteness flag (``finite``, ``model_used``) must say what the run computed:
    True exactly where the model's saved outputs are finite (``outputs_finite``) and its
    training losses were (``trained``, the field ``trained_name``).  Files written before
    ``trained`` was kept cannot show why a model with finite outputs was flagged, so
    without it only a True flag on non-finite outputs is a contradiction.

    Raises:
      ValueError: the first entry where the flag contradicts the values, in one line.
    """
    flag = np.asarray(flag, bool)
    want = np.asarray(outputs_finite, bool)
    if trained is not None:
        want = want & np.asarray(trained, bool)
        bad = flag != want
    else:
        bad = flag & ~want
    if np.any(bad):
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        where = ", ".join(str(i) for i in at)
        why = (
            "its saved outputs are finite"
            + (f" and {trained_name} says its training was" if trained is not None else "")
            if want[at]
            else "its saved outputs are not finite"
            + ("" if trained is None or np.asarray(trained, bool)[at] else f" (or {trained_name})")
        )
        raise ValueError(
            f"{name}[{where}] is {bool(flag[at])}, yet {why}: the flag contradicts the "
            "values it describes"
        )
