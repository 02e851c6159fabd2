"""The Flask app factory. No import-time side effects: blueprints are imported here."""
from __future__ import annotations

import logging

from flask import Blueprint, Flask

from bps.config import Settings, load_settings

MULTIPART_SLACK_BYTES = 64 * 1024


def create_app(settings: Settings | None = None) -> Flask:
    from service import datasets, health, jobs, models, openapi, predictions, web  # noqa: PLC0415
    from service.auth import require_api_key  # noqa: PLC0415
    from service.errors import register_error_handlers  # noqa: PLC0415
    from service.http import close_db, refuse_nul_in_url  # noqa: PLC0415
    from service.metrics import install_metrics  # noqa: PLC0415

    settings = settings or load_settings()
    app = Flask("bps")
    app.config["BPS_SETTINGS"] = settings
    # Werkzeug refuses a longer body (413) from its Content-Length before reading it, and
    # stops a chunked one as soon as it passes the limit.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes + MULTIPART_SLACK_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]

    v1 = Blueprint("v1", __name__, url_prefix="/v1")
    v1.before_request(require_api_key)
    v1.before_request(refuse_nul_in_url)
    for module in (datasets, jobs, models, predictions):
        v1.register_blueprint(module.blueprint)
    app.register_blueprint(v1)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(openapi.blueprint)
    app.register_blueprint(web.blueprint)
    app.teardown_appcontext(close_db)
    register_error_handlers(app)
    install_metrics(app)
    logging.getLogger("bps").setLevel(logging.INFO)
    return app
