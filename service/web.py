"""The web page for people (CONTRACT §6): `/` serves a static single-page app (plain ES
modules under service/static/, no build step) that calls the JSON API with the key in the
Authorization header; the chart library is the plotly.js bundle that the `plotly` package
ships, served from the installed package. No route here reads the database: tenant
scoping is the API's, so another tenant's id answers 404 on the page exactly as in the API."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from flask import Blueprint, Response, send_file, send_from_directory

from bps.problems import ProblemError

STATIC_DIR = Path(__file__).resolve().parent / "static"
ASSET_MAX_AGE_S = 300
# Scripts only from this origin (no inline script, no eval); plotly.js sets styles from
# script, so styles may be inline. The API is the only place the page talks to.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "connect-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data: blob:",
    "font-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
])

blueprint = Blueprint("web", __name__)


class AssetNotFound(ProblemError):
    status, title = 404, "Not Found"


def plotly_bundle() -> Path | None:
    """plotly.min.js of the installed `plotly` package, found without importing it."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


@blueprint.after_request
def security_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    return response


@blueprint.get("/")
def index() -> Response:
    response = send_from_directory(STATIC_DIR, "index.html", max_age=0)
    response.headers["Cache-Control"] = "no-cache"
    return response


@blueprint.get("/ui/vendor/plotly.min.js")
def chart_library() -> Response:
    bundle = plotly_bundle()
    if bundle is None:
        raise AssetNotFound("the chart library is not installed: pip install plotly", loc=["path"])
    return send_file(bundle, mimetype="text/javascript", max_age=ASSET_MAX_AGE_S)


@blueprint.get("/ui/<path:filename>")
def asset(filename: str) -> Response:
    # send_from_directory refuses paths that leave STATIC_DIR (404).
    response = send_from_directory(STATIC_DIR, filename, max_age=ASSET_MAX_AGE_S)
    if filename.endswith(".js"):  # module scripts need a JavaScript type, whatever /etc/mime.types says
        response.mimetype = "text/javascript"
    return response
