"""Training checkpoints with orbax: the train state plus each process's data-loader position.

Layout: ``<workdir>/checkpoints/<step>/{state,data}``. Orbax's `CheckpointManager` writes a step
into a temporary folder and renames it when every file is written, so a step folder that exists
is complete, and a write that fails or is killed never replaces the previous step; temporary
leftovers are removed when the manager is opened again. The last ``max_to_keep`` steps are kept.

Writes are asynchronous: `save` returns once the arrays are copied off the device and the files
are written in the background. An error of a background write is raised by the next `save`,
`wait` or `close` as `CheckpointWriteError`.

The data position is the loader iterator's ``get_state()`` (grain's JSON bytes or a dict). With
several processes every process has its own; they are gathered and stored together as JSON, and
each process takes its own back on restore.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written; earlier checkpoints are untouched."""


class CheckpointRestoreError(RuntimeError):
    """A checkpoint cannot be restored into this run; the message says why."""


def _remove_unfinished_writes(directory: Path) -> None:
    """Deletes the temporary folders of writes that never finished (a killed or failed save)."""
    if directory.is_dir():
        for tmp in directory.glob("*.orbax-checkpoint-tmp*"):
            shutil.rmtree(tmp, ignore_errors=True)


def encode_data_state(state: Any) -> dict[str, Any]:
    """A loader state (bytes or a JSON-able value) as a JSON-able dict."""
    if isinstance(state, bytes):
        return {"type": "bytes", "value": base64.b64encode(state).decode("ascii")}
    return {"type": "json", "value": state}


def decode_data_state(record: dict[str, Any]) -> Any:
    """Inverse of `encode_data_state`."""
    if record["type"] == "bytes":
        return base64.b64decode(record["value"])
    return record["value"]


def _gather_strings(text: str) -> list[str]:
    """Every process's ``text``, in process order (identity for one process)."""
    if jax.process_count() == 1:
        return [text]
    from jax.experimental import multihost_utils

    data = np.frombuffer(text.encode("utf-8"), np.uint8)
    sizes = multihost_utils.process_allgather(np.array([data.size], np.int32))
    longest = int(np.max(sizes))
    padded = np.zeros((longest,), np.uint8)
    padded[: data.size] = data
    everything = multihost_utils.process_allgather(padded)
    sizes = np.asarray(sizes).reshape(-1)
    return [bytes(row[:n]).decode("utf-8") for row, n in zip(everything, sizes, strict=True)]


def refuse_unless_resuming(
    checkpoints: Checkpointer, workdir: Path, resume: bool, error: type[Exception]
) -> int | None:
    """A run folder that holds checkpoints is continued only on purpose (`resume=True`).

    Returns:
      The latest checkpointed step, or None for a fresh folder.

    Raises:
      error: (the caller's error type) `workdir` holds checkpoints and `resume` is False; the
        Checkpointer is closed first.
    """
    latest = checkpoints.latest_step()
    if latest is not None and not resume:
        checkpoints.close()
        raise error(
            f"{workdir} already holds checkpoints (latest step {latest}); pass --resume to "
            "continue that run, or choose a new --workdir"
        )
    return latest


class Checkpointer:
    """Saves and restores (train state, data position) per step under ``directory``.

    Args:
      directory: the checkpoints folder (created).
      max_to_keep: how many of the latest steps to keep.
      async_save: write in the background.
    """

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int, async_save: bool = True):
        self.directory = Path(directory).absolute()
        if jax.process_index() == 0:
            _remove_unfinished_writes(self.directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=True,
            # Unfinished writes are removed above, synchronously: orbax's own clean-up runs in
            # the background and can race with the first save after a failed write.
            cleanup_tmp_directories=False,
            enable_async_checkpointing=async_save,
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "data")
        )
        self._pending: int | None = None  # step of the write that may still be running

    def latest_step(self) -> int | None:
        """The newest complete step, or None."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Every complete step, ascending."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, data_state: Any) -> None:
        """Starts writing ``step``; raises `CheckpointWriteError` for this or an earlier write."""
        self.wait()  # the previous write must have succeeded (errors name their own step)
        record = json.dumps(encode_data_state(data_state))
        states = [json.loads(s) for s in _gather_strings(record)]
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave({"processes": states}),
        )
        self._pending = step
        try:
            self._manager.save(step, args=args, force=True)
        except Exception as e:  # noqa: BLE001 - orbax and the filesystem raise many types
            self._pending = None
            raise self._write_error(step, e) from e

    def wait(self) -> None:
        """Blocks until background writes are done; raises `CheckpointWriteError` on failure."""
        step, self._pending = self._pending, None
        try:
            self._manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001
            raise self._write_error(step, e) from e

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, Any]:
        """Restores ``step`` into the shapes/shardings of ``abstract_state``.

        Returns:
          (state, this process's data state).

        Raises:
          CheckpointRestoreError: the checkpoint was written by another number of processes.
        """
        data = self._manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))
        states = data["data"]["processes"]
        if len(states) != jax.process_count():
            raise CheckpointRestoreError(
                f"{self.directory / str(step)}: saved by {len(states)} process(es), but "
                f"{jax.process_count()} are running; resume with the same number of processes"
            )
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
        restored = self._manager.restore(step, args=args)
        return restored["state"], decode_data_state(states[jax.process_index()])

    def close(self) -> None:
        """Waits for pending writes and releases the manager (errors as in `wait`)."""
        try:
            self.wait()
        finally:
            self._manager.close()

    def _write_error(self, step: int | None, error: Exception) -> CheckpointWriteError:
        what = f"step {step}" if step is not None else "a checkpoint"
        good = self.latest_step()
        kept = f"the last good checkpoint is step {good}" if good is not None else "none is kept"
        return CheckpointWriteError(
            f"writing {what} to {self.directory} failed ({type(error).__name__}: {error}); {kept}"
        )
