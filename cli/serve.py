"""`owl serve`: the local web page and JSON API (owl/serve/, docs/serve.md).

Argument handling and startup only: the model is loaded once with the shared `load_detector`,
compiled for the default buckets with one warm-up call, and handed to `owl.serve.app.create_app`,
which uvicorn runs until Ctrl-C. Needs the [serve] extra.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import click

from owl.cli.options import (
    EXIT_CODES_HELP,
    SEARCH_EXTRA_MODULES,
    UsageFailure,
    backend_option,
    calibration_options,
    check_extra,
    load_detector,
    max_pixels_option,
    max_pixels_value,
    model_option,
    precision_option,
    resolve_calibration,
    verbose_option,
    write_line,
)

# Modules of the [serve] extra (pyproject.toml).
SERVE_EXTRA_MODULES = ("fastapi", "uvicorn", "multipart")
LOCAL = ("127.0.0.1", "localhost", "::1")

EPILOG = """\b
Examples:
  owl serve --model shapes-tiny                 then open http://127.0.0.1:8000
  owl serve --model owlv2-b16 --port 8080 --max-upload-mb 64
  owl serve --host 0.0.0.0 --allow-host mybox.lan   reachable from the network (no login!)
  owl serve --review labels/annotations.json    review and correct a data set (docs/review.md)

"""


def check_serve_extra() -> None:
    """Stops with one line naming `pip install "owl[serve]"` when the [serve] extra is missing."""
    for name in SERVE_EXTRA_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise UsageFailure(
                f"`owl serve` needs the serve extra (module {name!r} is not installed); "
                'install it with: pip install "owl[serve]"'
            )


@click.command("serve", epilog=EPILOG + EXIT_CODES_HELP)
@model_option
@click.option(
    "--host", default="127.0.0.1", show_default=True,
    help="Address to bind. Anything but 127.0.0.1/localhost lets anyone on the network use the "
    "server (there is no login).",
)  # fmt: skip
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--allow-host", "allow_hosts", multiple=True, metavar="NAME",
    help="Another name the server may be reached by (its Host header), repeatable; local names "
    "and --host are always allowed.",
)  # fmt: skip
@click.option(
    "--max-upload-mb", type=click.FloatRange(min=0.001), default=32.0, show_default=True,
    help="Largest request body (all images of one request together), in MiB.",
)  # fmt: skip
@click.option(
    "--cache-images", type=click.IntRange(min=1), default=64, show_default=True,
    help="Uploaded images kept for re-scoring (least recently used dropped first).",
)  # fmt: skip
@click.option(
    "--index", "index_path", metavar="PATH", default=None,
    help="An `owl index` collection (built with this model) to search with POST /v1/search; needs "
    "the [search] extra.",
)  # fmt: skip
@click.option(
    "--review", "review", metavar="DATASET", default=None,
    help="Review and correct a COCO, YOLO or VOC data set (e.g. `owl label`'s output) instead of "
    "detecting: no model is loaded (docs/review.md).",
)  # fmt: skip
@click.option(
    "--review-images", metavar="DIR", default=None,
    help="With --review: the image folder of a COCO JSON without images/ beside it.",
)  # fmt: skip
@click.option(
    "--review-split", metavar="NAME", default="train", show_default=True,
    help="With --review: the YOLO data.yaml split, or an `owl label --split` folder's split.",
)  # fmt: skip
@max_pixels_option
@backend_option
@precision_option
@verbose_option
@calibration_options
@click.option(
    "--quiet", is_flag=True,
    help="No access log (by default one line per request on stderr: client, request, status).",
)  # fmt: skip
def serve(
    model: str,
    host: str,
    port: int,
    allow_hosts: tuple[str, ...],
    max_upload_mb: float,
    cache_images: int,
    index_path: str | None,
    review: str | None,
    review_images: str | None,
    review_split: str,
    max_image_pixels: int,
    backend: str,
    precision: str,
    verbose: bool,
    calibrated: bool,
    calibration_file: Path | None,
    quiet: bool,
) -> None:
    """Serve a web page and JSON API for interactive detection on this machine.

    Drop images on the page, type queries, draw example boxes, move the threshold: detections
    update without re-encoding the images. The API (POST /v1/detect, /v1/rescore,
    /v1/embed-query, /v1/search with --index; GET /v1/models, /healthz; schema at /openapi.json) is in docs/serve.md.
    Ctrl-C stops the server.
    """
    check_serve_extra()
    if review is not None:
        from owl.cli.serve_review import serve_review

        extra = () if host in ("0.0.0.0", "::") else (host,)
        serve_review(
            review, review_images, review_split, host=host, port=port,
            allowed_hosts=(*extra, *allow_hosts), max_body_bytes=int(max_upload_mb * 2**20),
            quiet=quiet, uvicorn_config=uvicorn_config,
        )  # fmt: skip
        return
    if index_path is not None:
        check_extra("serve --index", "search", SEARCH_EXTRA_MODULES, "search")
        if not Path(index_path).is_file():
            raise UsageFailure(f"--index {index_path}: no such index; build it with `owl index`")
    calibration = resolve_calibration(calibrated, calibration_file, model)
    import uvicorn

    from owl.serve.app import create_app

    detector = load_detector(
        model, batch_size=1, max_pixels=max_pixels_value(max_image_pixels), quiet=quiet,
        backend=backend, precision=precision, verbose=verbose,
    )  # fmt: skip
    _warm_up(detector)
    index = None
    if index_path is not None:
        from owl.cli.index import open_index

        index = open_index(Path(index_path), detector, create=False)  # another model: exit 2
    extra = () if host in ("0.0.0.0", "::") else (host,)
    app = create_app(
        detector,
        model_name=model,
        max_upload_bytes=int(max_upload_mb * 2**20),
        cache_images=cache_images,
        allowed_hosts=(*extra, *allow_hosts),
        index=index,
        calibration=calibration,
    )
    if host not in LOCAL:
        write_line(
            f"warning: bound to {host}: anyone who can reach this machine on port {port} can use "
            "this server (there is no login)",
            err=True,
        )
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    shown = f"[{shown}]" if ":" in shown else shown
    server = uvicorn.Server(uvicorn_config(app, host, port, quiet=quiet))
    write_line(f"owl serve: model {model}, open http://{shown}:{port}/ (Ctrl-C stops)", err=True)
    try:
        server.run()
    finally:
        app.state.server.close()
        if index is not None:
            index.close()
    if not server.started:
        raise click.ClickException(f"could not listen on {host}:{port} (is the port in use?)")
    write_line("owl serve: stopped", err=True)


def uvicorn_config(app, host: str, port: int, *, quiet: bool):
    """uvicorn's settings: its own messages at warning level (startup lines are owl's), and one
    access line per request on stderr (`127.0.0.1:5342 - "POST /v1/detect HTTP/1.1" 200 OK`)
    unless `quiet`."""
    import uvicorn

    log_config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "default": {"()": "uvicorn.logging.DefaultFormatter", "fmt": "%(levelprefix)s %(message)s"},
            "access": {
                "()": "uvicorn.logging.AccessFormatter",
                "fmt": '%(client_addr)s - "%(request_line)s" %(status_code)s',
                "use_colors": False,
            },
        },
        "handlers": {
            name: {"formatter": name, "class": "logging.StreamHandler", "stream": "ext://sys.stderr"}
            for name in ("default", "access")
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": "WARNING", "propagate": False},
            "uvicorn.error": {"level": "WARNING"},
            "uvicorn.access": {
                "handlers": ["access"], "level": "WARNING" if quiet else "INFO", "propagate": False,
            },
        },
    }  # fmt: skip
    return uvicorn.Config(
        app, host=host, port=port, log_config=log_config, log_level=None, access_log=not quiet,
        lifespan="off",
    )  # fmt: skip


def _warm_up(detector) -> None:
    """Compiles the image encoder (batch bucket 1), text encoder and class head once."""
    import numpy as np

    blank = np.full((32, 32, 3), 0.5, np.float32)
    detector.detect(blank, ["warm up"])
