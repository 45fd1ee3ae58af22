"""The arrays files a run folder keeps, described field by field, and the one checker of them.

Each experiment kind declares its arrays file as a tuple of ``Field``s
(kinds/<kind>/arrays.py): a name, a dtype kind and a shape written with
symbols (``("M", "T", "C")``: M models, T targets, C classes).  ``check``
verifies a dict of arrays against such a schema: every required field present,
of its dtype kind, with a shape whose symbols agree across fields.  It is what
``jaxmia analyze`` runs before it trusts a file a user may have damaged, edited
or mixed up, and what the analyses run before they index.

numpy only.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["Field", "check"]

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
    """

    name: str
    kind: str
    shape: tuple[str | int, ...]
    doc: str = ""
    required: bool = True

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"unknown dtype kind {self.kind!r} for {self.name}")


def _describe(shape, sizes) -> str:
    return "(" + ", ".join(f"{s}={sizes[s]}" if s in sizes else str(s) for s in shape) + ")"


def check(arrays, schema, sizes: dict[str, int] | None = None) -> dict[str, int]:
    """Checks ``arrays`` (a dict of array-likes) against ``schema`` (Fields).

    Args:
      arrays: e.g. the contents of an npz file.
      schema: tuple of Field.
      sizes: symbol sizes already known (e.g. from run.json); a field must agree.

    Returns:
      dict symbol -> size, every symbol a present field uses.

    Raises:
      ValueError: the first problem, in one line: "lack a, b" for missing
        required fields, "<name> must be <kind> ..." for a wrong dtype, "<name>
        must have shape (...)" for a shape that disagrees with the others.
    """
    missing = [f.name for f in schema if f.required and f.name not in arrays]
    if missing:
        raise ValueError(f"lack {', '.join(missing)}")
    known = dict(sizes or {})
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
            want = sym if isinstance(sym, int) else known.setdefault(sym, n)
            if n != want:
                raise ValueError(
                    f"{f.name} must have shape {_describe(f.shape, known)}, got "
                    f"{tuple(a.shape)} (axis {axis})"
                )
    return known
