"""Loading recipe configs: a Python file's `get_config()`, locked, with `key=value` overrides.

Configs are plain Python (ml_collections ConfigDicts, one file per recipe). The recipes ship inside
the package, in owl/configs/, so that `--config NAME` works from an installed wheel as well as from
a checkout; `resolve_config` turns a name or a path into the file. The config is locked before
overrides, so a misspelt `--set` key fails with the closest known keys; values are converted to the
type of the key's current value. Used by `owl train` and `owl pretrain`.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RECIPES_DIR = Path(__file__).resolve().parent.parent / "configs"
_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}


class ConfigError(ValueError):
    """A config file or an override is wrong; the message names it and says what to do."""


def recipe_names() -> list[str]:
    """Names of the recipes shipped in owl/configs/ (file names without ".py"), sorted."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.py") if not p.name.startswith("_"))


def resolve_config(spec: str | Path) -> Path:
    """A `--config` value -> the config file: an existing path, else a shipped recipe's name.

    A name may be given with or without ".py" (``finetune_owlvit_b32``). An existing file always
    wins, so a local file is never shadowed by a recipe of the same name.

    Raises:
      ConfigError: neither a file nor a recipe name; the message lists the recipes.
    """
    path = Path(spec)
    if path.is_file():
        return path
    name = path.name[:-3] if path.name.endswith(".py") else path.name
    if path.parent == Path(".") and name in recipe_names():
        return RECIPES_DIR / f"{name}.py"
    close = difflib.get_close_matches(name, recipe_names(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(
        f"--config {spec}: no such file and not a recipe name{hint}; give a config file path or "
        f"one of: {', '.join(recipe_names())}"
    )


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Any:
    """Loads ``get_config()`` from a Python file, locks it and applies ``key=value`` overrides.

    The file's folder is importable while it loads, so a config can ``import`` a sibling
    config (``import finetune_owlvit_b32 as base``), as a script can.

    Raises:
      ConfigError: missing file, no ``get_config``, an error inside the file, or a bad override.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    name = f"owl_config_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.parent.absolute())
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
        if not hasattr(module, "get_config"):
            raise ConfigError(f"{path}: defines no get_config() function")
        config = module.get_config()
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - any error raised by user code in the config file
        raise ConfigError(f"{path}: loading the config failed: {type(e).__name__}: {e}") from e
    finally:
        sys.path.remove(folder)
    config.lock()
    for item in overrides:
        apply_override(config, item)
    return config


def _flat_keys(config: Any, prefix: str = "") -> list[str]:
    import ml_collections

    keys = []
    for key, value in config.items():
        full = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(_flat_keys(value, full + "."))
        else:
            keys.append(full)
    return keys


def _unknown_key(config: Any, key: str) -> ConfigError:
    known = _flat_keys(config)
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
    hint = (
        f"; did you mean {' or '.join(close)}?"
        if close
        else "; run with --print-config to list keys"
    )
    return ConfigError(f"unknown config key {key!r}{hint}")


def convert_value(text: str, current: Any, key: str) -> Any:
    """Converts ``text`` to the type of ``current`` (bool, int, float, str, tuple, list)."""
    if isinstance(current, bool):
        low = text.strip().lower()
        if low in _TRUE | _FALSE:
            return low in _TRUE
        raise ConfigError(f"{key}={text!r}: expected a boolean (true/false)")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{key}={text!r}: expected an integer") from None
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{key}={text!r}: expected a number") from None
    if isinstance(current, str):
        return text
    if isinstance(current, (tuple, list)):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = tuple(part.strip() for part in text.split(",") if part.strip())
        if not isinstance(value, (tuple, list)):
            value = (value,)
        if current:
            value = tuple(convert_value(str(v), current[0], key) for v in value)
        return type(current)(value)
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_override(config: Any, item: str) -> None:
    """Applies one ``dotted.key=value`` to a locked ConfigDict, converting the value.

    Raises:
      ConfigError: no "=", an unknown key (with close matches), a group key, or a bad value.
    """
    import ml_collections

    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. optim.lr=1e-4")
    key, text = item.split("=", 1)
    key = key.strip()
    node = config
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
        if not isinstance(child, ml_collections.ConfigDict):
            raise _unknown_key(config, key)
        node = child
    leaf = parts[-1]
    if leaf not in node:
        raise _unknown_key(config, key)
    current = node[leaf]
    if isinstance(current, ml_collections.ConfigDict):
        raise ConfigError(
            f"{key} is a group; set one of its keys: " + ", ".join(f"{key}.{k}" for k in current)
        )
    value = convert_value(text, current, key)
    try:
        setattr(node, leaf, value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{key}={text!r}: {e}") from None
