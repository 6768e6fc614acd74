"""The HTML gallery of search results: one self-contained page a user opens in a browser.

Each result image is drawn with its boxes by the one drawing function (`owl.inference.draw`),
shrunk to a thumbnail and embedded in the page as a PNG data URI, so the page can be moved or
mailed on its own. Under each thumbnail: the rank, the best score, the file path (a link to the
original file) and the matching boxes' labels and scores. An image that can no longer be read is
listed with the problem instead of a thumbnail.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from pathlib import Path

from owl.files import atomic_write
from owl.inference.detections import Detections
from owl.inference.draw import draw_detections

THUMBNAIL_SIZE = 320  # pixels, longest side

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; background: #fafafa; color: #222; }
h1 { font-size: 1.3em; } .grid { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; padding: 0.5em; background: #fff; border: 1px solid #ddd; width: 330px; }
figure img { display: block; max-width: 100%; } figcaption { font-size: 0.85em; }
figcaption a { word-break: break-all; } .error { color: #a00; }
"""


def gallery_html(results: Sequence[Detections], *, title: str) -> str:
    """The page for search results (one `Detections` per image, best first)."""
    figures = []
    for rank, dets in enumerate(results, 1):
        path = str(dets.metadata.get("path", ""))
        link = html.escape(_link(path))
        best = f"{float(dets.confidence[0]):.3f}" if len(dets) else "-"
        try:
            image = f'<img src="{_thumbnail_uri(path, dets)}" alt="{html.escape(path)}">'
        except (OSError, ValueError) as e:
            image = f'<p class="error">cannot draw {html.escape(path)}: {html.escape(str(e))}</p>'
        boxes = ", ".join(
            f"{html.escape(str(d.label))} {d.confidence:.2f}" for d in dets
        )  # fmt: skip
        figures.append(
            f'<figure data-rank="{rank}" data-path="{html.escape(path)}">{image}'
            f"<figcaption>#{rank} &middot; best {best}<br>"
            f'<a href="{link}">{html.escape(path)}</a><br>{boxes}</figcaption></figure>'
        )
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{len(results)} image(s), best first.</p>"
        f'<div class="grid">{"".join(figures)}</div></body></html>\n'
    )


def write_gallery(
    path: str | os.PathLike, results: Sequence[Detections], *, title: str = "owl search"
) -> None:
    """Writes the gallery page atomically."""
    page = gallery_html(results, title=title)
    with atomic_write(path) as f:
        f.write(page)


def _link(path: str) -> str:
    """file:// URI of the image; a video frame "clip.mp4#t=4.000" opens the video at 4 s."""
    from owl.video.index import split_frame_path

    if not path:
        return ""
    parts = split_frame_path(path)
    if parts is None:
        return Path(path).resolve().as_uri()
    return f"{Path(parts[0]).resolve().as_uri()}#t={parts[1]:.3f}"


def _thumbnail_uri(path: str, dets: Detections) -> str:
    from owl.video.index import load_frame, split_frame_path

    drawn = draw_detections(load_frame(path) if split_frame_path(path) else path, dets)
    drawn.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    buffer = io.BytesIO()
    drawn.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
