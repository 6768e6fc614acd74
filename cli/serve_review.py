"""`owl serve --review DATASET`: the review-and-correct page over a labelled data set.

Argument handling and startup only: `owl.serve.review.ReviewSession` reads the data set (a bad
or lossy one is exit 2 with its one line), `owl.serve.review_app.create_review_app` is the app,
run by uvicorn with `owl serve`'s settings. No model is loaded.
"""

from __future__ import annotations

import os

from owl.cli.options import UsageFailure, write_line


def serve_review(
    dataset: str,
    images: str | None,
    split: str,
    *,
    host: str,
    port: int,
    allowed_hosts: tuple[str, ...],
    max_body_bytes: int,
    quiet: bool,
    uvicorn_config,
) -> None:
    """Opens `dataset` for review and serves the page until Ctrl-C."""
    import click
    import uvicorn

    from owl.serve.review import ReviewError, ReviewSession
    from owl.serve.review_app import create_review_app

    try:
        session = ReviewSession(dataset, images, split=split)
    except ReviewError as e:
        raise UsageFailure(f"--review: {e}") from None
    write_line(f"owl serve --review: {session.line}", err=True)
    if session.note:
        write_line(f"note: {session.note}", err=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        write_line(
            f"warning: bound to {host}: anyone who can reach this machine on port {port} can "
            "edit this data set (there is no login)",
            err=True,
        )
    folder = session.files[0].parent if session.files else session.source.annotations.parent
    if not os.access(folder, os.W_OK):
        write_line(
            f"warning: {folder} is not writable: you can review, but Save will fail until it is",
            err=True,
        )
    app = create_review_app(session, allowed_hosts=allowed_hosts, max_body_bytes=max_body_bytes)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    shown = f"[{shown}]" if ":" in shown else shown
    server = uvicorn.Server(uvicorn_config(app, host, port, quiet=quiet))
    write_line(
        f"owl serve --review: {session.name}, edit log {session.log_path}; open "
        f"http://{shown}:{port}/ (Ctrl-C stops)",
        err=True,
    )
    server.run()
    if not server.started:
        raise click.ClickException(f"could not listen on {host}:{port} (is the port in use?)")
    write_line("owl serve: stopped", err=True)
