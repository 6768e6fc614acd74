"""JAX's persistent compilation cache under owl's cache folder, so a second run compiles nothing.

Compiling OWLv2 B/16 at 960 px takes over a minute on a CPU, and every fresh `owl detect` process
used to pay it again. `enable` points JAX's on-disk cache at `<owl cache>/xla` (next to the
downloaded checkpoints) and caches every executable, however fast it compiled: a fresh process
then loads the executables it needs from disk instead of compiling them.

Entries live in one subfolder per jaxlib version (`xla/jaxlib-0.10.2`): two environments sharing a
cache folder (a floor venv and a newest one, or a GPU image) then never load each other's
executables, which XLA:CPU reports as a machine-feature mismatch on every entry and could fault on.

On by default; `OWL_COMPILATION_CACHE=0` turns it off, and a directory set by the user through
JAX's own `jax_compilation_cache_dir` is left alone.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

ENV = "OWL_COMPILATION_CACHE"
_OFF = ("0", "false", "no", "off")


def enabled() -> bool:
    """Whether the cache is wanted (the `OWL_COMPILATION_CACHE` switch)."""
    return os.environ.get(ENV, "1").strip().lower() not in _OFF


def enable(directory: str | os.PathLike) -> Path | None:
    """Turns JAX's persistent compilation cache on in `directory`/jaxlib-VERSION; returns it.

    Returns None when the cache is off.

    Idempotent. Does nothing when switched off, or when JAX already has a cache directory.
    """
    if not enabled():
        return None
    import jax

    current = getattr(jax.config, "jax_compilation_cache_dir", None)
    if current:
        return Path(current)
    path = Path(directory) / f"jaxlib-{_jaxlib_version()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # an unwritable cache folder must not stop detection
    # The thresholds first, the directory (which switches the cache on) last: a JAX that lacks
    # an option (they moved between releases before) leaves the cache off, said in one line.
    options = (
        ("jax_persistent_cache_min_compile_time_secs", 0.0),
        ("jax_persistent_cache_min_entry_size_bytes", 0),
        ("jax_compilation_cache_dir", str(path)),
    )
    for name, value in options:
        try:
            jax.config.update(name, value)
        except AttributeError:  # "Unrecognized config option"
            _say_off(jax.__version__, name)
            return None
    return path


def _jaxlib_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("jaxlib")
    except metadata.PackageNotFoundError:  # a source build without metadata
        import jaxlib

        return str(getattr(jaxlib, "__version__", "unknown"))


@functools.cache
def _say_off(version: str, option: str) -> None:
    print(
        f"owl: jax {version} has no option {option}; the persistent compilation cache stays off "
        "(every process compiles again)",
        file=sys.stderr,
    )
