"""What a user types on the command line, turned into owl objects: image lists, boxes, queries.

`owl detect` and `owl embed-query` take image files, folders and glob patterns, query boxes as
"X0,Y0,X1,Y1" text, a queries file, exemplar images with labels and saved embedding files. This
module turns those strings into sorted path lists, box tuples and `TextQuery` / `ImageQuery`
objects, so that the command modules only handle arguments and printing. Every problem is an
`InputError` whose message is one line naming the file or value and saying what to do.

Image expansion rules (`expand_images`):
  * an http(s) URL is kept as given; `fetch_image_url` downloads it (with a size cap and a
    timeout) before detection;
  * an existing file is taken as given, whatever its suffix (the loader reports a non-image);
  * a path that does not exist and has no glob characters is also kept, so that the detector
    reports it as a failed image and the rest of the batch goes on;
  * a folder gives its image files (suffix in `IMAGE_SUFFIXES`, any case) and video files
    (`owl.video.reader.VIDEO_SUFFIXES`), not its subfolders
    unless `recursive=True`; hidden files and folders (".name") are skipped;
  * a glob pattern ("photos/*.jpg", "data/**/*.png") gives the matching image files; "**" always
    crosses folders;
  * a folder or pattern that yields no image is an `InputError`;
  * each folder or pattern is sorted (by path, case-sensitive), arguments keep their order, and a
    file named twice is kept once (at its first position).
"""

from __future__ import annotations

import collections
import glob
import http.client
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from owl.inference.queries import BoxXYXY, ImageQuery, TextQuery, parse_text_query

IMAGE_SUFFIXES: tuple[str, ...] = (
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
)  # fmt: skip
_GLOB_CHARS = ("*", "?", "[")
_NAME_JOINER = "__"
_URL = re.compile(r"https?://", re.IGNORECASE)

#: An image URL may send at most this many bytes (a guard against endless or huge responses).
URL_MAX_BYTES = 64 << 20
#: Seconds to wait for the connection and for each read of an image URL.
URL_TIMEOUT = 30.0


class InputError(ValueError):
    """A command-line input that cannot be used; the message is one line for the user."""


# -- images ----------------------------------------------------------------------------------------


def is_image_name(path: str | os.PathLike) -> bool:
    """Whether the file name ends in one of `IMAGE_SUFFIXES` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _is_input_name(path: str | os.PathLike) -> bool:
    """An image or a video file name (videos are detected frame by frame, see owl.video)."""
    from owl.video.reader import is_video_name

    return is_image_name(path) or is_video_name(path)


def expand_images(specs: Sequence[str | os.PathLike], *, recursive: bool = False) -> list[str]:
    """Expands files, folders and glob patterns into a list of image paths (see module docstring).

    Args:
      specs: what the user passed as IMAGES.
      recursive: also search subfolders of the folders given.

    Returns:
      Paths as strings, in argument order, each folder/pattern sorted, without repeats.

    Raises:
      InputError: a folder or pattern that gives no image file.
    """
    out: list[str] = []
    seen: set[str] = set()
    for spec in specs:
        spec = os.fspath(spec)
        for path in _expand_one(spec, recursive):
            key = path if is_url(path) else os.path.realpath(path)
            if key not in seen:
                seen.add(key)
                out.append(path)
    return out


def is_url(spec: str | os.PathLike) -> bool:
    """Whether an IMAGES argument is an http(s) URL (fetched, not looked up on disk)."""
    return isinstance(spec, str) and _URL.match(spec) is not None


def fetch_image_url(
    url: str, dest: Path, *, max_bytes: int = URL_MAX_BYTES, timeout: float = URL_TIMEOUT
) -> Path:
    """Downloads an image URL to `dest` (a new file), refusing more than `max_bytes`.

    The size is checked twice: a Content-Length above the cap stops before the body is read,
    and a body that grows past it (no or a false Content-Length) stops at the cap.

    Raises:
      InputError: one line naming the URL: unreachable, an HTTP error, a timeout, too large.
    """
    request = urllib.request.Request(url, headers={"User-Agent": "owl-detect/1"})
    cap = f"more than {max_bytes / (1 << 20):g} MiB; download it and pass the file"
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise InputError(f"{url}: the image is {int(length)} bytes, {cap}")
            data = response.read(max_bytes + 1)
    except urllib.error.HTTPError as e:
        raise InputError(f"{url}: cannot fetch the image (HTTP {e.code} {e.reason})") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", None) or e
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            reason = f"no answer within {timeout:g} s"
        raise InputError(f"{url}: cannot fetch the image ({reason})") from None
    if len(data) > max_bytes:
        raise InputError(f"{url}: the image is {cap}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    return dest


def url_file_name(url: str) -> str:
    """The file name an image URL ends in ("https://h/p/cat.jpg?s=2" -> "cat.jpg"), or "image"."""
    name = urllib.parse.urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
    return urllib.parse.unquote(name) or "image"


def _expand_one(spec: str, recursive: bool) -> list[str]:
    if is_url(spec):
        return [spec]
    path = Path(spec)
    if path.is_dir():
        found = _images_in_folder(path, recursive)
        if not found:
            hint = "" if recursive else "; pass --recursive to search its subfolders"
            raise InputError(
                f"{spec}: folder holds no image files ({', '.join(IMAGE_SUFFIXES)}){hint}"
            )
        return found
    if path.exists() or not any(c in spec for c in _GLOB_CHARS):
        return [spec]  # a file, or a missing one the detector will report
    matches = sorted(
        m for m in glob.glob(spec, recursive=True) if os.path.isfile(m) and _is_input_name(m)
    )
    if not matches:
        raise InputError(
            f"{spec!r} matches no image file ({', '.join(IMAGE_SUFFIXES)}); check the pattern"
        )
    return matches


def _images_in_folder(folder: Path, recursive: bool) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        for name in files:
            if not name.startswith(".") and _is_input_name(name):
                found.append(os.path.join(root, name))
    return sorted(found, key=lambda p: Path(p).relative_to(folder).parts)


def drawn_image_names(paths: Sequence[str | os.PathLike], suffix: str = ".png") -> list[str]:
    """File names for drawn copies of `paths`: the image stem plus `suffix`, unique in the list.

    Images whose stems collide get their parent folders prepended, joined by "__", until the
    names differ ("a/cat.jpg", "b/cat.jpg" -> "a__cat.png", "b__cat.png"); files that differ
    only in suffix ("cat.jpg", "cat.png") keep it in the name ("cat_jpg.png", "cat_png.png");
    a counter settles anything left, such as an image whose own stem is "a__cat" (a drawn
    copy from an earlier run: "a__cat-2.png"), so that it never pushes the same-named images
    off the documented naming. Names are compared case-insensitively.
    """
    absolute = [Path(os.path.abspath(os.fspath(p))) for p in paths]
    same_place = collections.Counter((str(a.parent).lower(), a.stem.lower()) for a in absolute)
    parts = []
    for a in absolute:
        stem = a.stem
        if same_place[(str(a.parent).lower(), stem.lower())] > 1 and a.suffix:
            stem = f"{stem}_{a.suffix.lstrip('.')}"
        parts.append([*a.parent.parts[1:], stem])
    depth = [1] * len(parts)
    while True:
        names = [_NAME_JOINER.join(pp[-d:]) for pp, d in zip(parts, depth, strict=True)]
        # Only images with the same stem grow their folder prefix; other clashes get a counter.
        counts = collections.Counter(
            (n.lower(), pp[-1].lower()) for n, pp in zip(names, parts, strict=True)
        )
        grew = False
        for i, name in enumerate(names):
            if counts[(name.lower(), parts[i][-1].lower())] > 1 and depth[i] < len(parts[i]):
                depth[i] += 1
                grew = True
        if not grew:
            break
    used: set[str] = set()
    out = []
    for name in names:
        candidate, n = name, 1
        while candidate.lower() in used:
            n += 1
            candidate = f"{name}-{n}"
        used.add(candidate.lower())
        out.append(candidate + suffix)
    return out


# -- a dataset's own ids (`owl detect --annotations`) -------------------------------------------


def dataset_image_names(image: dict) -> str | None:
    """The file an annotation-file image record names: `file_name`, else `coco_url`'s last part."""
    name = image.get("file_name")
    if isinstance(name, str) and name:
        return name.replace("\\", "/")
    url = image.get("coco_url") or image.get("flickr_url")
    if isinstance(url, str) and url.rstrip("/"):
        return url.rstrip("/").split("/")[-1]
    return None


def match_dataset_images(
    paths: Sequence[str | os.PathLike], images: Sequence[dict]
) -> list[int | None]:
    """The dataset image id of each path, matched by file name; None where there is none.

    A path matches an image record whose file name (`dataset_image_names`) is the path's last
    parts: "val/000.png" matches `file_name` "000.png" and "val/000.png", not "train/000.png".
    When several records end the same way, the one naming most of the path wins; a tie is no
    match (None), since guessing would score detections against the wrong image.
    """
    by_base: dict[str, list[tuple[tuple[str, ...], int]]] = collections.defaultdict(list)
    for record in images:
        name = dataset_image_names(record)
        if name is not None:
            parts = tuple(p for p in name.split("/") if p not in ("", "."))
            by_base[parts[-1]].append((parts, int(record["id"])))
    out: list[int | None] = []
    for path in paths:
        parts = Path(os.path.abspath(os.fspath(path))).parts
        fits = [(len(rp), i) for rp, i in by_base.get(parts[-1], []) if parts[-len(rp) :] == rp]
        fits.sort(reverse=True)
        if not fits or (len(fits) > 1 and fits[0][0] == fits[1][0]):
            out.append(None)
        else:
            out.append(fits[0][1])
    return out


def match_categories(labels: Sequence[str], categories: Sequence[dict]) -> list[int | None]:
    """The dataset category id of each query label, by name (exact, then ignoring case)."""
    exact = {str(c["name"]): int(c["id"]) for c in categories}
    folded = {name.casefold(): i for name, i in exact.items()}
    return [exact.get(label, folded.get(label.casefold())) for label in labels]


# -- boxes and exemplars ---------------------------------------------------------------------------


def parse_box(spec: str) -> BoxXYXY:
    """Parses "X0,Y0,X1,Y1" (pixels, floats allowed, spaces ignored) into a tuple.

    Raises:
      InputError: not four numbers.
    """
    fields = [f.strip() for f in spec.split(",")]
    try:
        values = tuple(float(f) for f in fields)
    except ValueError:
        values = ()
    if len(values) != 4 or not all(np.isfinite(values)):
        raise InputError(
            f"query box {spec!r}: expected four numbers X0,Y0,X1,Y1 in pixels, e.g. 10,20,110,220"
        )
    return values  # type: ignore[return-value]


def group_exemplars(
    images: Sequence[str],
    boxes: Sequence[BoxXYXY],
    labels: Sequence[str] = (),
    *,
    method: str = "auto",
) -> list[ImageQuery]:
    """Pairs query images with boxes and groups the exemplars into image queries by label.

    Pairing: one image with any number of boxes (each box is an exemplar on that image); or as
    many images as boxes (paired in order); or images without boxes (each image is an exemplar
    with no box: the most object-like token for OWLv2, the whole image for OWL-ViT).

    Labels: none (each exemplar is named after its image's file stem), one (shared by all), or
    one per exemplar. A label may end in "@threshold" ("dog@0.3"). Exemplars that share a label
    are averaged into one query, in order of first appearance.

    Raises:
      InputError: counts that do not pair up, or an empty label.
    """
    if not images:
        if boxes or labels:
            raise InputError("--query-box and --query-label need a --query-image to apply to")
        return []
    if not boxes:
        exemplars = [(image, None) for image in images]
    elif len(images) == 1:
        exemplars = [(images[0], box) for box in boxes]
    elif len(images) == len(boxes):
        exemplars = list(zip(images, boxes, strict=True))
    else:
        raise InputError(
            f"got {len(images)} --query-image and {len(boxes)} --query-box; give one box per "
            "image, or one image with several boxes"
        )
    if not labels:
        labels = [Path(image).stem for image, _ in exemplars]
    elif len(labels) == 1:
        labels = list(labels) * len(exemplars)
    elif len(labels) != len(exemplars):
        raise InputError(
            f"got {len(labels)} --query-label for {len(exemplars)} exemplars; give one label, "
            "or one per exemplar"
        )
    groups: dict[str, list] = {}
    thresholds: dict[str, float | None] = {}
    for exemplar, spec in zip(exemplars, labels, strict=True):
        try:
            parsed = parse_text_query(spec)
        except ValueError as e:
            raise InputError(str(e)) from None
        if not parsed.text:
            raise InputError(f"query label {spec!r} is empty; give a name such as 'dog'")
        groups.setdefault(parsed.text, []).append(exemplar)
        if thresholds.get(parsed.text) is None:
            thresholds[parsed.text] = parsed.threshold
    return [
        ImageQuery(tuple(ex), label=name, threshold=thresholds[name], method=method)
        for name, ex in groups.items()
    ]


# -- queries files and saved embeddings ------------------------------------------------------------


def read_queries_file(path: str | os.PathLike) -> list[TextQuery]:
    """Reads a queries file: one query per line, written as on the command line.

    A line is "text" or "text@threshold" ("red car@0.3"); blank lines and lines starting with
    "#" are ignored; surrounding spaces are dropped. The file is UTF-8.

    Raises:
      InputError: unreadable file, a bad threshold, an empty query, or no query at all.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(f"{path}: queries file not found; check the path") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(
            f"{path}: cannot read the queries file ({e}); give a UTF-8 text file"
        ) from None
    queries = []
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            query = parse_text_query(line)
        except ValueError as e:
            raise InputError(f"{path}, line {number}: {e}") from None
        if not query.text:
            raise InputError(f"{path}, line {number}: empty query {line!r}; give some text")
        queries.append(query)
    if not queries:
        raise InputError(f"{path}: no queries in the file (one per line; '#' starts a comment)")
    return queries


def split_threshold_suffix(spec: str) -> tuple[str, float | None]:
    """Splits "dog.npz@0.3" into ("dog.npz", 0.3) when "dog.npz@0.3" itself is not a file.

    Raises:
      InputError: a threshold outside [0, 1].
    """
    head, sep, tail = spec.rpartition("@")
    if not sep or os.path.exists(spec):
        return spec, None
    try:
        value = float(tail)
    except ValueError:
        return spec, None
    if not 0.0 <= value <= 1.0:
        raise InputError(f"{spec!r}: threshold {tail} is not in [0, 1]")
    return head, value


__all__ = [
    "IMAGE_SUFFIXES",
    "InputError",
    "drawn_image_names",
    "expand_images",
    "fetch_image_url",
    "is_url",
    "url_file_name",
    "group_exemplars",
    "is_image_name",
    "match_categories",
    "match_dataset_images",
    "parse_box",
    "read_queries_file",
    "split_threshold_suffix",
]
