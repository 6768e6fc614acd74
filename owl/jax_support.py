"""The JAX versions owl supports, and the one place that says so when the installed one is not.

pyproject.toml declares `jax>=0.10.0,<0.13` (and jaxlib, flax alike): pip keeps a user's JAX
when it is in that range. owl can also run from a source tree on `PYTHONPATH` against whatever
JAX is installed (benchmarks/gpu.sh does so on a GPU image), which pip never checks. Then a JAX
outside the range gets one line on stderr, once per process, before the first model is loaded.

What changed across the range and is guarded where it is used:
  * the persistent-cache options (`owl.compilation_cache`): an option this JAX lacks leaves the
    cache off, with one line, instead of raising;
  * `jax.export` (StableHLO export): public since 0.4.30, so present across the range; a module
    serialised by a newer JAX than the reader is refused in one line (owl.export.stablehlo);
  * JAX 0.11 dropped Python 3.11: on 3.11 pip resolves the range to 0.10.x.
"""

from __future__ import annotations

import functools
import re
import sys

JAX_FLOOR = (0, 10, 0)  # the oldest tested (.ci/run's floor environment)
JAX_CEILING = (0, 13)  # the first release not checked
JAX_RANGE = ">=0.10.0,<0.13"


def parse_version(text: str) -> tuple[int, ...]:
    """'0.10.2' -> (0, 10, 2); '0.12.0.1' -> (0, 12, 0, 1); stops at the first non-number part."""
    parts = []
    for piece in text.split("."):
        m = re.match(r"\d+", piece)
        if m is None:
            break
        parts.append(int(m.group()))
        if m.end() != len(piece):
            break
    return tuple(parts)


def in_range(version: str) -> bool:
    """Whether a JAX version string is within owl's supported range."""
    v = parse_version(version)
    return JAX_FLOOR <= v < JAX_CEILING


def version_note(version: str) -> str | None:
    """One line saying `version` is outside the supported range, or None when it is inside."""
    if in_range(version):
        return None
    return (
        f"owl: jax {version} is outside the tested range {JAX_RANGE}; if something fails, "
        f'install a jax in that range (pip install "jax{JAX_RANGE}")'
    )


@functools.cache
def check_jax() -> str | None:
    """Prints `version_note` for the installed JAX on stderr once per process; returns it."""
    import jax

    note = version_note(jax.__version__)
    if note is not None:
        print(note, file=sys.stderr)
    return note


__all__ = ["JAX_CEILING", "JAX_FLOOR", "JAX_RANGE", "check_jax", "in_range", "version_note"]
