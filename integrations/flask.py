"""Flask: `instrument_app(app, model_routes={"/predict": "fraud"})`.

What: wraps ``app.wsgi_app`` in `MlwatchWSGIMiddleware` and adds two small hooks so the
middleware knows what only Flask knows: a ``before_request`` function (run first) that leaves the
matched rule (``/items/<int:item_id>``) in the WSGI environ, and a ``got_request_exception``
receiver that leaves the exception Flask turned into a 500 there, so its type is recorded.

Why this module is thin: everything is in the pure WSGI middleware (`mlwatch.integrations.wsgi`).
Importing it without Flask installed raises an ImportError that says which extra to install.

Pre-fork servers: mlwatch is fork-safe (each gunicorn worker starts with empty buffers and its own
aggregator thread, with or without ``--preload``) and every worker flushes its last windows at
exit, ``--max-requests`` recycling included.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

try:
    import flask
    from flask.signals import got_request_exception
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError('mlwatch.integrations.flask needs Flask: pip install "mlwatch[flask]"') from exc

from mlwatch._errors import ConfigError
from mlwatch._health import HEALTH

from ._http_metrics import DEFAULT_MAX_BODY_BYTES, HTTP_MODEL
from .wsgi import ENVIRON_EXCEPTION, ENVIRON_ROUTE, MlwatchWSGIMiddleware

__all__ = ["instrument_app"]

_EXTENSION = "mlwatch"


def _remember_route() -> None:
    """``before_request``: the matched rule, for the middleware (never raises, returns None)."""
    try:
        rule = flask.request.url_rule
        if rule is not None:
            flask.request.environ[ENVIRON_ROUTE] = rule.rule
    except Exception as exc:
        HEALTH.count_error("http_flask", exc)


def _remember_exception(sender: Any, exception: BaseException, **extra: Any) -> None:
    """``got_request_exception``: the exception Flask answers with a 500."""
    try:
        flask.request.environ[ENVIRON_EXCEPTION] = exception
    except Exception as exc:
        HEALTH.count_error("http_flask", exc)


def instrument_app(
    app: flask.Flask,
    *,
    model_routes: Mapping[str, str | Mapping[str, Any]] | None = None,
    exclude_paths: Iterable[str] = (),
    http_model: str | None = HTTP_MODEL,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    prediction_id_header: str | None = None,
) -> MlwatchWSGIMiddleware:
    """Record every request of a Flask `app`, and model routes' JSON bodies.

    Call it once, where the app is created (a second call returns the first middleware).
    Options are those of `MlwatchWSGIMiddleware`; a wrong one raises `mlwatch.ConfigError` here.
    ``prediction_id_header="X-Prediction-Id"`` sends each model-route prediction's id back in
    that header, for ``mlwatch.log_outcome(prediction_id=...)``.
    """
    if not isinstance(app, flask.Flask):
        raise ConfigError(f"instrument_app needs a Flask application, got {app!r}")
    existing = app.extensions.get(_EXTENSION)
    if isinstance(existing, MlwatchWSGIMiddleware):
        return existing
    middleware = MlwatchWSGIMiddleware(
        app.wsgi_app, model_routes=model_routes, exclude_paths=exclude_paths, http_model=http_model, max_body_bytes=max_body_bytes,
        prediction_id_header=prediction_id_header,
    )
    app.wsgi_app = middleware  # type: ignore[method-assign,assignment]
    app.before_request_funcs.setdefault(None, []).insert(0, _remember_route)
    got_request_exception.connect(_remember_exception, app, weak=False)
    app.extensions[_EXTENSION] = middleware
    return middleware
