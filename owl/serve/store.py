"""The images a client has sent: id -> (name, server-side copy, encoding), in a bounded LRU.

Rescoring needs only an image's encoding (boxes, class embeddings, head terms), so the server
keeps that; the uploaded bytes stay in a private temporary folder, under a random id, only so
that an exemplar box drawn on the image can be embedded. The least recently used image is
dropped (encoding and file) when more than `capacity` are held, so memory and disk stay flat
however long the server runs. Ids are random and never paths: no request names a file. The store
has its own lock, so requests use it without holding the model lock.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import secrets
import shutil
import tempfile
import threading
from pathlib import Path

from owl.inference.detector import ImageEncoding

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclasses.dataclass(frozen=True)
class StoredImage:
    """One uploaded image: the name the client gave, its private copy and its encoding."""

    id: str
    name: str
    path: Path
    encoding: ImageEncoding


def safe_name(name: str | None, fallback: str) -> str:
    """A client's file name reduced to a plain base name (no folders, no odd characters)."""
    base = _UNSAFE.sub("_", (name or "").replace("\\", "/").rsplit("/", 1)[-1]).lstrip(".")
    return base[:100] or fallback


class ImageStore:
    """Bounded LRU of `StoredImage`s with files under one temporary folder (removed by close)."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.root = Path(tempfile.mkdtemp(prefix="owl-serve-"))
        self._items: collections.OrderedDict[str, StoredImage] = collections.OrderedDict()
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._items)

    def new_file(self, name: str) -> tuple[str, Path]:
        """A fresh id and the path its upload is to be written to."""
        image_id = secrets.token_hex(8)
        folder = self.root / image_id
        folder.mkdir()
        return image_id, folder / name

    def discard(self, image_id: str) -> None:
        """Removes an id's file (an upload that could not be used) and entry, if any."""
        with self._lock:
            self._items.pop(image_id, None)
            shutil.rmtree(self.root / image_id, ignore_errors=True)

    def put(self, item: StoredImage) -> None:
        with self._lock:
            self._items[item.id] = item
            self._items.move_to_end(item.id)
            while len(self._items) > self.capacity:
                oldest = next(iter(self._items))
                self.discard(oldest)

    def get(self, image_id: str) -> StoredImage | None:
        with self._lock:
            item = self._items.get(image_id)
            if item is not None:
                self._items.move_to_end(image_id)
            return item

    def public(self, message: str) -> str:
        """A message with the server's private paths replaced by the client's file names."""
        return re.sub(re.escape(str(self.root)) + r"/[0-9a-f]+/", "", message)

    def close(self) -> None:
        with self._lock:
            self._items.clear()
        shutil.rmtree(self.root, ignore_errors=True)
