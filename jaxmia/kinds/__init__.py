"""The experiment kinds, found by name: each is one folder here (see base.py's ``Kind``).

To add a kind, add its folder (keys, plan, arrays, analysis, figures, console
text, file names) and one entry in ``_KINDS`` below.  Nothing else in jaxmia asks
for a kind by its name: the config, the run, the run folder, ``jaxmia analyze``
and the console summary all ask this registry.
"""

from __future__ import annotations

from jaxmia.errors import UserError, show
from jaxmia.kinds import population, single_target, targets
from jaxmia.kinds.base import Kind, product_files

__all__ = [
    "DEFAULT",
    "Kind",
    "all_kinds",
    "format_summary",
    "get",
    "names",
    "product_files",
]

_KINDS = (single_target.KIND, targets.KIND, population.KIND)
KINDS: dict[str, Kind] = {kind.name: kind for kind in _KINDS}
DEFAULT = _KINDS[0].name  # the pipeline's single-point attack


def names() -> tuple[str, ...]:
    """The values the ``experiment`` key takes."""
    return tuple(KINDS)


def all_kinds() -> tuple[Kind, ...]:
    return _KINDS


def get(name) -> Kind:
    """The kind called ``name``; UserError for any other value."""
    if not isinstance(name, str) or name not in KINDS:
        raise UserError(f"experiment must be one of {', '.join(KINDS)}; got {show(name)}")
    return KINDS[name]


def format_summary(results: dict) -> str:
    """The console summary of a results.json dict, in its kind's words.

    A dict without ``experiment`` (an older or hand-made one) reads as the default kind.
    """
    return get(results.get("experiment") or DEFAULT).format_summary(results)
