"""The index's embedded database: one SQLite file (WAL journal), one row per indexed image.

Why SQLite: every change is a transaction, so a process killed at any moment (`kill -9`) leaves
the file as it was after the last commit, never half-written; WAL lets any number of readers
search a consistent snapshot while one process (or several shards, taking turns on the write
lock) indexes. Python ships it, so the store itself needs no dependency; the ANN index over the
vectors (FAISS, `owl.search.vectors`) is derived from these rows and rebuilt from them when stale.
The measurements behind the choice (against LanceDB) are in docs/search.md.

Tables:
  * ``settings``: key/value JSON: the model (name, weights SHA-256), the input settings
    (image size, pad value, resize method), boxes kept per image and how they were ranked, the
    schema version. An index is only ever searched with the settings it was built with.
  * ``images``: path (absolute, unique), content SHA-256, size, mtime, width/height/scale, and the
    image's K kept boxes as float32 blobs: cxcywh boxes [K, 4], normalised class embeddings
    [K, E], logit shift and scale [K], objectness logits [K] (NaN for OWL-ViT v1), and each box's
    patch index [K] (`box_index` in `owl detect` output).
  * ``generation``: one counter, bumped in every write transaction, so a reader knows when the
    rows it holds in memory are stale.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 60_000  # shards take turns on the write lock; wait rather than fail

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS generation (id INTEGER PRIMARY KEY CHECK (id = 0), value INTEGER);
INSERT OR IGNORE INTO generation VALUES (0, 0);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    scale REAL NOT NULL,
    num_boxes INTEGER NOT NULL,
    boxes BLOB NOT NULL,
    embeddings BLOB NOT NULL,
    logit_shift BLOB NOT NULL,
    logit_scale BLOB NOT NULL,
    objectness BLOB NOT NULL,
    box_index BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS images_sha256 ON images (sha256);
"""


class IndexStoreError(ValueError):
    """The file is not an owl index, or one this version cannot read."""


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """One indexed image and its kept boxes (K of them, best ranked first)."""

    path: str
    sha256: str
    size: int
    mtime_ns: int
    width: int
    height: int
    scale: float
    boxes: np.ndarray  # [K, 4] float32 cxcywh on the padded square
    embeddings: np.ndarray  # [K, E] float32, normalised as the class head normalises
    logit_shift: np.ndarray  # [K] float32
    logit_scale: np.ndarray  # [K] float32
    objectness: np.ndarray  # [K] float32 logits, NaN without an objectness head
    box_index: np.ndarray  # [K] int64 patch index


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Every kept box of the index, stacked, as of one generation (for searching)."""

    generation: int
    paths: list[str]
    widths: np.ndarray  # [N]
    heights: np.ndarray  # [N]
    scales: np.ndarray  # [N]
    offsets: np.ndarray  # [N + 1]: image i's boxes are rows offsets[i]:offsets[i + 1]
    boxes: np.ndarray  # [B, 4]
    embeddings: np.ndarray  # [B, E]
    logit_shift: np.ndarray  # [B]
    logit_scale: np.ndarray  # [B]
    objectness: np.ndarray  # [B]
    box_index: np.ndarray  # [B]

    @property
    def image_of_box(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.paths)), np.diff(self.offsets))


def connect(path: str | os.PathLike, *, read_only: bool = False) -> sqlite3.Connection:
    """Opens (creating if needed) an index file in WAL mode, autocommit off only in `write`.

    `read_only`: open an existing index for searching only. The file is opened with SQLite's
    `mode=ro` and `query_only`, so nothing can create or change it. A file that holds no index
    (a 0-byte file, any other SQLite file) stays exactly as it was.
    """
    if read_only:
        return _connect_read_only(path)
    try:
        # Any thread may use the connection (owl serve searches from its worker threads): every
        # use goes through `Index._lock`, so calls never overlap.
        db = sqlite3.connect(
            os.fspath(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
            check_same_thread=False,
        )  # fmt: skip
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable at each checkpoint,
        # never corrupt; a power cut may lose the last commits, a killed process loses nothing
        db.executescript(_SCHEMA)
    except sqlite3.DatabaseError as e:
        raise IndexStoreError(
            f"{path} is not an owl index ({e}); give a new path to build one"
        ) from None
    return db


def _connect_read_only(path: str | os.PathLike) -> sqlite3.Connection:
    uri = Path(os.path.abspath(path)).as_uri() + "?mode=ro"
    try:
        db = sqlite3.connect(
            uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
            check_same_thread=False,
        )  # fmt: skip
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA query_only = ON")
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    except sqlite3.DatabaseError as e:
        raise IndexStoreError(
            f"{path} is not an owl index ({e}); build one with `owl index`"
        ) from None
    if not {"settings", "generation", "images"} <= tables:
        db.close()
        raise IndexStoreError(f"{path} holds no owl index; build it with `owl index`")
    return db


class write:  # noqa: N801 - used as `with write(db):`
    """One write transaction (BEGIN IMMEDIATE ... COMMIT), bumping the generation counter."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        if self.db.execute("PRAGMA query_only").fetchone()[0]:
            raise IndexStoreError("the index was opened read-only (for searching); nothing written")
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.db.execute("UPDATE generation SET value = value + 1 WHERE id = 0")
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")


def read_settings(db: sqlite3.Connection) -> dict[str, Any]:
    return {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM settings")}


def write_settings(db: sqlite3.Connection, settings: Mapping[str, Any]) -> None:
    """Records the settings (inside the caller's transaction)."""
    db.executemany(
        "INSERT OR REPLACE INTO settings VALUES (?, ?)",
        [(k, json.dumps(v, sort_keys=True)) for k, v in settings.items()],
    )


def generation(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT value FROM generation WHERE id = 0").fetchone()[0])


def put_images(db: sqlite3.Connection, records: Iterable[ImageRecord]) -> None:
    """Inserts or replaces images by path (inside the caller's transaction)."""
    db.executemany(
        "INSERT INTO images (path, sha256, size, mtime_ns, width, height, scale, num_boxes, boxes,"
        " embeddings, logit_shift, logit_scale, objectness, box_index)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (path) DO UPDATE SET sha256 = excluded.sha256, size = excluded.size,"
        " mtime_ns = excluded.mtime_ns, width = excluded.width, height = excluded.height,"
        " scale = excluded.scale, num_boxes = excluded.num_boxes, boxes = excluded.boxes,"
        " embeddings = excluded.embeddings, logit_shift = excluded.logit_shift,"
        " logit_scale = excluded.logit_scale, objectness = excluded.objectness,"
        " box_index = excluded.box_index",
        [
            (
                r.path,
                r.sha256,
                r.size,
                r.mtime_ns,
                r.width,
                r.height,
                r.scale,
                len(r.boxes),
                _blob(r.boxes, np.float32),
                _blob(r.embeddings, np.float32),
                _blob(r.logit_shift, np.float32),
                _blob(r.logit_scale, np.float32),
                _blob(r.objectness, np.float32),
                _blob(r.box_index, np.int64),
            )  # fmt: skip
            for r in records
        ],
    )


def touch_image(db: sqlite3.Connection, path: str, size: int, mtime_ns: int) -> None:
    """Records a new mtime for an image whose content did not change."""
    db.execute("UPDATE images SET size = ?, mtime_ns = ? WHERE path = ?", (size, mtime_ns, path))


def delete_images(db: sqlite3.Connection, paths: Iterable[str]) -> int:
    """Deletes images by path (inside the caller's transaction); returns how many were there."""
    before = db.total_changes
    db.executemany("DELETE FROM images WHERE path = ?", [(p,) for p in paths])
    return db.total_changes - before


def file_states(db: sqlite3.Connection) -> dict[str, tuple[str, int, int]]:
    """path -> (sha256, size, mtime_ns) of every indexed image."""
    return {
        p: (h, s, m) for p, h, s, m in db.execute("SELECT path, sha256, size, mtime_ns FROM images")
    }


def record_by_sha256(db: sqlite3.Connection, sha256: str) -> ImageRecord | None:
    """An indexed image with this content (to copy instead of encoding it again), if any."""
    row = db.execute(
        f"SELECT {_COLUMNS} FROM images WHERE sha256 = ? LIMIT 1", (sha256,)
    ).fetchone()
    return None if row is None else _record(row)


def records(db: sqlite3.Connection) -> Iterator[ImageRecord]:
    """Every indexed image, by path."""
    for row in db.execute(f"SELECT {_COLUMNS} FROM images ORDER BY path"):
        yield _record(row)


def snapshot(db: sqlite3.Connection, embed_dim: int) -> Snapshot:
    """All boxes of one consistent state (one read transaction), stacked for searching."""
    db.execute("BEGIN")
    try:
        gen = generation(db)
        rows = db.execute(
            "SELECT path, width, height, scale, num_boxes, boxes, embeddings, logit_shift,"
            " logit_scale, objectness, box_index FROM images ORDER BY id"
        ).fetchall()
    finally:
        db.execute("COMMIT")
    counts = np.array([r[4] for r in rows], np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def stack(column: int, dtype, width: int | None = None) -> np.ndarray:
        data = b"".join(r[column] for r in rows)
        array = np.frombuffer(data, dtype)
        return array.reshape(-1, width) if width else array

    return Snapshot(
        generation=gen,
        paths=[r[0] for r in rows],
        widths=np.array([r[1] for r in rows], np.int64),
        heights=np.array([r[2] for r in rows], np.int64),
        scales=np.array([r[3] for r in rows], np.float64),
        offsets=offsets,
        boxes=stack(5, np.float32, 4),
        embeddings=stack(6, np.float32, embed_dim),
        logit_shift=stack(7, np.float32),
        logit_scale=stack(8, np.float32),
        objectness=stack(9, np.float32),
        box_index=stack(10, np.int64),
    )


_COLUMNS = (
    "path, sha256, size, mtime_ns, width, height, scale, num_boxes, boxes, embeddings, "
    "logit_shift, logit_scale, objectness, box_index"
)


def _blob(array: np.ndarray, dtype) -> bytes:
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


def _record(row: tuple) -> ImageRecord:
    k = row[7]
    return ImageRecord(
        path=row[0], sha256=row[1], size=row[2], mtime_ns=row[3], width=row[4], height=row[5],
        scale=row[6], boxes=np.frombuffer(row[8], np.float32).reshape(k, 4),
        embeddings=np.frombuffer(row[9], np.float32).reshape(k, -1),
        logit_shift=np.frombuffer(row[10], np.float32),
        logit_scale=np.frombuffer(row[11], np.float32),
        objectness=np.frombuffer(row[12], np.float32),
        box_index=np.frombuffer(row[13], np.int64),
    )  # fmt: skip
