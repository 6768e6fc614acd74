"""Downloading one file over HTTP(S): atomic, resumable, checksummed, with a progress bar.

Checkpoints are large (0.6 to 1.7 GiB) and connections drop. `download` therefore streams into
`<dest>.part`, resumes an interrupted transfer with an HTTP Range request, verifies an optional
SHA-256 and only then moves the file into place with `os.replace`, so `dest` is either absent or
complete. A small lock file (`<dest>.lock`, created with O_EXCL) stops two processes from writing
the same `.part` file. Only the standard library (urllib) and tqdm are used.

Every completed download is recorded beside the file in `<dest>.download.json` (URL, size,
SHA-256), so a file damaged later (a full disk, a bad copy, an editor) is told apart from a good
one: `check_download` compares the size cheaply, or the whole hash when asked.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

_USER_AGENT = "owl-checkpoint-download/1"
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")
RECORD_SUFFIX = ".download.json"


class DownloadError(RuntimeError):
    """A file could not be downloaded; the message says why and how to get it by other means."""


class ChecksumError(DownloadError):
    """A downloaded file's SHA-256 differs from the expected one (the bad file was deleted)."""


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = 30,
    chunk_size: int = 1 << 20,
) -> Path:
    """Downloads `url` to `dest`, resuming a previous partial download.

    Args:
      url: http(s) URL of the file.
      dest: final path of the file; its folder is created when missing.
      sha256: expected hex SHA-256 of the whole file; None skips verification.
      progress: show a tqdm progress bar (bytes, rate, ETA) on stderr.
      timeout: seconds to wait for the connection and for each read.
      chunk_size: bytes read and written at a time.

    Returns:
      `dest`, complete (and verified when `sha256` is given).

    Raises:
      DownloadError: the server could not be reached or the transfer broke off. Any partial
        `<dest>.part` file is kept, so the next call resumes where this one stopped.
      ChecksumError: the file's SHA-256 differs from `sha256`; the bad file is deleted.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with _exclusive_lock(dest.with_name(dest.name + ".lock"), dest):
        # Two rounds at most: the second one, without a Range header, starts over after the
        # server showed that the partial file does not match the remote file.
        for _ in range(2):
            if _fetch(url, dest, part, progress=progress, timeout=timeout, chunk_size=chunk_size):
                break
            part.unlink(missing_ok=True)
        else:
            raise DownloadError(
                f"could not download {url}: the server answered a range request inconsistently "
                f"twice. Download it by other means and place it at {dest}"
            )
        actual = file_sha256(part)
        if sha256 is not None:
            if actual != sha256.lower():
                part.unlink(missing_ok=True)
                raise ChecksumError(
                    f"checksum mismatch for {url}: expected sha256 {sha256.lower()}, got {actual}; "
                    f"the bad file was deleted, try again or download it by other means and "
                    f"place it at {dest}"
                )
        size = part.stat().st_size
        os.replace(part, dest)
        _write_record(dest, {"url": url, "size": size, "sha256": actual})
    return dest


def record_path(dest: Path) -> Path:
    """Where the download record of `dest` is kept: `<dest>.download.json`."""
    dest = Path(dest)
    return dest.with_name(dest.name + RECORD_SUFFIX)


def read_record(dest: Path) -> dict | None:
    """The record written when `dest` was downloaded ({"url", "size", "sha256"}), or None.

    None when there is no record (a file placed by hand, or downloaded by an older owl) or the
    record cannot be read.
    """
    try:
        record = json.loads(record_path(dest).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("size"), int):
        return None
    if not isinstance(record.get("sha256"), str):
        return None
    return record


def check_download(dest: Path, *, full: bool = False, sha256: str | None = None) -> str | None:
    """What is wrong with a downloaded file, or None when it checks out.

    Args:
      dest: the downloaded file.
      full: also hash the whole file and compare it with the record (and with `sha256`); without
        it only the size is compared, which costs nothing.
      sha256: the hash known in advance (the registry's), if any. It is compared with the
        record's hash always, and with the file's own when `full` or when there is no record.

    Returns:
      None, or a short reason such as "1000 bytes, but 5000 were downloaded".
    """
    dest = Path(dest)
    size = dest.stat().st_size
    record = read_record(dest)
    expected = sha256.lower() if sha256 else None
    if record is not None:
        if size != record["size"]:
            return f"{size} bytes, but {record['size']} were downloaded"
        if expected is not None and record["sha256"] != expected:
            return f"downloaded with sha256 {record['sha256']}, expected {expected}"
    if full or (expected is not None and record is None):
        actual = file_sha256(dest)
        if record is not None and actual != record["sha256"]:
            return f"sha256 {actual}, but {record['sha256']} was downloaded"
        if expected is not None and actual != expected:
            return f"sha256 {actual}, expected {expected}"
    return None


def _write_record(dest: Path, record: dict) -> None:
    """Writes the download record atomically (a half-written record would read as none)."""
    path = record_path(dest)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def file_sha256(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def _fetch(
    url: str, dest: Path, part: Path, *, progress: bool, timeout: float, chunk_size: int
) -> bool:
    """One request; appends to or rewrites `part`.

    Returns:
      True when `part` now holds the whole file; False when `part` turned out not to belong to
      the remote file and the caller should delete it and start over.
    """
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            # Range not satisfiable: the partial file reaches (or passes) the end of the file.
            _, _, total = _parse_content_range(e.headers.get("Content-Range"))
            return total is None or total == offset
        raise _network_error(url, dest, part, f"HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise _network_error(url, dest, part, _reason(e)) from e

    with response:
        length = response.headers.get("Content-Length")
        remaining = int(length) if length is not None and length.isdigit() else None
        if response.status == 206:
            start, _, total = _parse_content_range(response.headers.get("Content-Range"))
            if start != offset:
                return False
            mode = "ab"
        else:  # 200: the server ignored the Range header (or none was sent); start over.
            offset, total, mode = 0, remaining, "wb"
        received = 0
        bar = tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=dest.name,
            file=sys.stderr,
            disable=not progress,
            leave=True,
        )
        try:
            with bar, open(part, mode) as f:
                while block := response.read1(chunk_size):
                    f.write(block)
                    received += len(block)
                    bar.update(len(block))
        except (OSError, http.client.HTTPException) as e:
            raise _network_error(url, dest, part, _reason(e)) from e
        if remaining is not None and received < remaining:
            raise _network_error(
                url,
                dest,
                part,
                f"the connection closed after {offset + received} of {offset + remaining} bytes",
            )
    return True


def _parse_content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """(first byte, last byte, total size) from a Content-Range header; None where unknown."""
    match = _CONTENT_RANGE.fullmatch(value.strip()) if value else None
    if match is None:
        return None, None, None

    def as_int(s: str | None) -> int | None:
        return int(s) if s and s.isdigit() else None

    return as_int(match[1]), as_int(match[2]), as_int(match[3])


def _reason(error: BaseException) -> str:
    """A short human reason for a network exception."""
    if isinstance(error, urllib.error.URLError) and not isinstance(error, urllib.error.HTTPError):
        if not isinstance(error.reason, BaseException):
            return str(error.reason)
        error = error.reason
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _network_error(url: str, dest: Path, part: Path, reason: str) -> DownloadError:
    kept = (
        f" The partial file {part} was kept; running again resumes it."
        if part.exists() and part.stat().st_size
        else ""
    )
    return DownloadError(
        f"could not download {url} ({reason}). Download it by other means and place it at {dest}, "
        f"or set OWL_MODEL_BASE_URL to a mirror holding {dest.name}, or OWL_CACHE_DIR to a "
        f"folder whose checkpoints/ holds it.{kept}"
    )


@contextlib.contextmanager
def _exclusive_lock(lock: Path, dest: Path) -> Iterator[None]:
    """Holds `lock` (created with O_EXCL) while the body runs; replaces a lock of a dead process.

    The lock file holds "<hostname> <pid>". A lock from this host whose process no longer exists
    is stale and replaced; any other existing lock means a download is running, and raises.
    """
    me = f"{socket.gethostname()} {os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _lock_is_stale(lock):
                lock.unlink(missing_ok=True)
                continue
            raise DownloadError(
                f"another process is downloading {dest} (lock file {lock}); wait for it to "
                f"finish, or delete {lock} if no download is running"
            ) from None
        with os.fdopen(fd, "w") as f:
            f.write(me)
        break
    else:  # pragma: no cover - only when another process re-creates the lock in between
        raise DownloadError(f"could not take the lock file {lock}; delete it and try again")
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _lock_is_stale(lock: Path) -> bool:
    """True when `lock` was written on this host by a process that no longer runs."""
    try:
        host, pid = lock.read_text().split()
        pid_number = int(pid)
    except (OSError, ValueError):
        return False  # unreadable or being written: assume it is live
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid_number, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
