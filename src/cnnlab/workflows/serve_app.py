"""The web app of `cnnlab serve`: the page, `POST /api/predict` (multipart `images`), and the server on loopback."""

from __future__ import annotations

import html
import threading
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.serving import BaseWSGIServer, make_server

from cnnlab.tracking.server import is_loopback
from cnnlab.util.errors import UserError
from cnnlab.workflows.serve_page import PAGE
from cnnlab.workflows.serving import Served, answer

DEFAULT_LIMIT_MB = 20.0


class ServeError(UserError, ValueError):
    """`cnnlab serve` asked to do what it must not (serve beyond this machine) or cannot."""


def create_app(served: Served, limit_mb: float = DEFAULT_LIMIT_MB, top: int = 5) -> Flask:
    app = Flask("cnnlab.serve")
    app.config["MAX_CONTENT_LENGTH"] = int(limit_mb * 1024 * 1024)
    height, width, _ = served.input_shape
    page = PAGE.format(title=html.escape(served.name), classes=len(served.classes), width=width, height=height,
                       limit_mb=limit_mb)  # fmt: skip
    lock = threading.Lock()  # one prediction at a time: Keras models are not made for concurrent calls

    @app.get("/")
    def index() -> Any:
        return page

    @app.post("/api/predict")
    def api_predict() -> Any:
        files = request.files.getlist("images")
        if not files:
            return jsonify(error="no images: send them as multipart form fields named `images`"), 400
        uploads = [(f.filename or "upload", f.read()) for f in files]
        with lock:
            results = answer(served, uploads, top)
        return jsonify(model=served.name, classes=served.classes, results=results)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_: RequestEntityTooLarge) -> Any:
        return jsonify(error=f"the upload is over the limit of {limit_mb:g} MB (cnnlab serve --max-upload-mb)"), 413

    return app


def check_host(host: str) -> None:
    """Only loopback: the page has no login."""
    if not is_loopback(host):
        raise ServeError(
            f"--host {host}: `cnnlab serve` has no login, so it binds to this machine only (127.0.0.1); "
            "to share a model, put a reverse proxy with authentication in front of it, or serve it with "
            "`mlflow models serve` behind one"
        )


def server(served: Served, host: str = "127.0.0.1", port: int = 8000, limit_mb: float = DEFAULT_LIMIT_MB,
           top: int = 5) -> BaseWSGIServer:  # fmt: skip
    """The server, bound and ready to `serve_forever()`."""
    check_host(host)
    return make_server(host, port, create_app(served, limit_mb, top), threaded=True)
