"""Per-image queries from captions: OWL-ST's caption-derived vocabulary, and the captions file.

OWLv2's self-training (OWL-ST, arXiv 2306.09683 §3.1) queries each web image with the word
n-grams of its own caption (``nltk.everygrams``, up to 10 words, at most 300 per image), drops
n-grams made only of stop words, and uses no parsing, on purpose: any caption style works and
nothing is lost to a parser's mistakes. Each box then keeps its best-scoring n-gram as its label.

:func:`caption_queries` does the same with one change: stop words and punctuation *split* the
caption into runs of content words, and n-grams are taken inside each run. "a small red star, a
large blue circle and a white ring" gives the runs "small red star", "large blue circle", "white
ring" and their n-grams ("red star", "star", ...). OWL-ST's n-grams that cross a stop word
("star and a large") or merely add an article ("a red star" next to "red star") would be extra
queries for the same objects, splitting one object's label over near-duplicates; the n-grams
that are left are the ones OWL-ST keeps that can name a single object. ``min_words`` and
``extra_stop_words`` narrow the vocabulary further (the ShapesWorld recipe treats its size words
"small"/"large" like OWL-ST's generic web words and keeps two-word n-grams: exactly "red star").

:func:`read_captions` reads the ``--captions`` file: image -> a caption (n-grams are extracted)
or a list of class names (used as they are).
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

#: OWL-ST's cap on queries per image.
MAX_QUERIES = 300
#: OWL-ST's longest n-gram.
MAX_WORDS = 10

#: Function words that never name an object (articles, pronouns, conjunctions, prepositions,
#: auxiliaries, numbers written out) plus generic photo words OWL-ST removed ("image", "photo").
STOP_WORDS = frozenset(
    """a an the this that these those some any each every no all both few many much more most
    other another such own same and or nor but so yet if then than as of at by for from in into
    on onto off out over under up down to with without within through between among about
    above below behind beside near next front top bottom left right there here
    is are was were be been being am has have had having do does did can could will would shall
    should may might must i me my we our you your he him his she her it its they them their
    what which who whom whose where when why how not very too also just only
    one two three four five six seven eight nine ten
    image images photo photos picture pictures stock jpg jpeg png view close closeup""".split()
)

_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
_BREAK = re.compile(r"[.,;:!?()\[\]{}\"/|]+")


class CaptionsError(ValueError):
    """A captions file that cannot be used; the message names the file (and row)."""


def caption_queries(
    caption: str,
    *,
    min_words: int = 1,
    max_words: int = MAX_WORDS,
    extra_stop_words: Iterable[str] = (),
    max_queries: int = MAX_QUERIES,
) -> list[str]:
    """The query phrases of one caption (see the module docstring).

    Args:
        caption: free text.
        min_words, max_words: n-gram lengths kept.
        extra_stop_words: further words that split runs (e.g. a data set's generic words).
        max_queries: at most this many phrases (longest runs' n-grams first in caption order).

    Returns:
        Distinct lowercase phrases, in order of first appearance.
    """
    if min_words < 1 or max_words < min_words:
        raise ValueError(f"need 1 <= min_words <= max_words, got {min_words}, {max_words}")
    stop = STOP_WORDS | {w.lower() for w in extra_stop_words}
    runs: list[list[str]] = []
    for chunk in _BREAK.split(caption.lower()):
        run: list[str] = []
        for word in _WORD.findall(chunk):
            if word in stop:
                if run:
                    runs.append(run)
                run = []
            else:
                run.append(word)
        if run:
            runs.append(run)
    out: dict[str, None] = {}
    for run in runs:
        for n in range(min(max_words, len(run)), min_words - 1, -1):
            for start in range(len(run) - n + 1):
                out.setdefault(" ".join(run[start : start + n]))
    return list(out)[:max_queries]


def _entries_from_json(data: object, path: Path) -> list[tuple[str, str | list[str]]]:
    if isinstance(data, Mapping):
        items = list(data.items())
    elif isinstance(data, list):
        items = []
        for i, row in enumerate(data):
            if not isinstance(row, Mapping) or "image" not in row:
                raise CaptionsError(
                    f"{path}: item {i} must be an object with 'image' and 'caption' or 'classes'"
                )
            items.append((row["image"], row.get("classes", row.get("caption"))))
    else:
        raise CaptionsError(f"{path}: expected an object {{image: caption}} or a list of rows")
    return items


def _entries_from_csv(path: Path, text: str) -> list[tuple[str, str | list[str]]]:
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        return []
    header = [h.strip().lower() for h in rows[0]]
    if "image" in header and ("caption" in header or "classes" in header):
        i = header.index("image")
        key = "classes" if "classes" in header else "caption"
        j = header.index(key)
        out: list[tuple[str, str | list[str]]] = []
        for number, row in enumerate(rows[1:], start=2):
            if len(row) <= max(i, j):
                raise CaptionsError(f"{path}:{number}: expected columns {', '.join(header)}")
            value = row[j]
            out.append(
                (row[i], [c.strip() for c in value.split(";")] if key == "classes" else value)
            )
        return out
    raise CaptionsError(
        f"{path}:1: the CSV needs a header row with 'image' and 'caption' (or 'classes', "
        "names separated by ';')"
    )


def read_captions(path: str | os.PathLike) -> dict[str, str | list[str]]:
    """Reads a captions file: JSON or CSV, image -> caption or class list.

    JSON: ``{"a.jpg": "a dog on a sofa", "b.jpg": ["dog", "sofa"]}`` or a list of
    ``{"image": ..., "caption": ...}`` / ``{"image": ..., "classes": [...]}`` rows. CSV: a header
    row with ``image`` and ``caption`` (or ``classes``, names separated by ";"). Image keys are
    matched to the images by path, then by path relative to the current folder, then by file
    name (`match_captions`).

    Raises:
        CaptionsError: unreadable file, bad structure or a value that is neither text nor a list
            of names.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CaptionsError(f"{path}: cannot read the captions file ({e})") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise CaptionsError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
        items = _entries_from_json(data, path)
    elif path.suffix.lower() == ".csv":
        items = _entries_from_csv(path, text)
    else:
        raise CaptionsError(f"{path}: name the captions file *.json or *.csv")
    out: dict[str, str | list[str]] = {}
    for key, value in items:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = [v.strip() for v in value if v.strip()]
        elif not isinstance(value, str):
            raise CaptionsError(f"{path}: {key!r}: expected a caption string or a list of names")
        out[str(key)] = value
    if not out:
        raise CaptionsError(f"{path}: no captions in the file")
    return out


def match_captions(
    paths: Sequence[str], captions: Mapping[str, str | list[str]]
) -> list[str | list[str] | None]:
    """The caption entry of each image path (None where the file has none).

    A key matches a path equal to it, or the same file after resolving both, or the path's file
    name when exactly one key has that file name.
    """
    by_resolved = {os.path.abspath(k): v for k, v in captions.items()}
    by_name: dict[str, list[str | list[str]]] = {}
    for k, v in captions.items():
        by_name.setdefault(os.path.basename(k), []).append(v)
    out: list[str | list[str] | None] = []
    for p in paths:
        if p in captions:
            out.append(captions[p])
        elif os.path.abspath(p) in by_resolved:
            out.append(by_resolved[os.path.abspath(p)])
        else:
            named = by_name.get(os.path.basename(p), [])
            out.append(named[0] if len(named) == 1 else None)
    return out


def queries_for(
    entry: str | list[str],
    *,
    min_words: int = 1,
    max_words: int = MAX_WORDS,
    extra_stop_words: Iterable[str] = (),
) -> list[str]:
    """An image's query texts: a class list as it is, a caption's `caption_queries`."""
    if isinstance(entry, list):
        return list(dict.fromkeys(entry))
    return caption_queries(
        entry, min_words=min_words, max_words=max_words, extra_stop_words=extra_stop_words
    )
