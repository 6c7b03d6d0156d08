"""FastAPI (and any Starlette app): `instrument_app(app, model_routes={"/predict": "fraud"})`.

What: puts `MlwatchASGIMiddleware` around the app's whole middleware stack, outside Starlette's
``ServerErrorMiddleware``, so the middleware sees the status code and bytes of the 500 responses
that middleware sends for unhandled exceptions as well as the exception itself. Route templates
come from ``scope["route"]``, which Starlette's router sets.

Why this module is thin: everything is in the pure ASGI middleware (`mlwatch.integrations.asgi`);
this only knows where FastAPI builds its middleware stack. Importing it without FastAPI or
Starlette installed raises an ImportError that says which extra to install.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

try:
    from starlette.applications import Starlette
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        'mlwatch.integrations.fastapi needs FastAPI/Starlette: pip install "mlwatch[fastapi]"'
    ) from exc

from mlwatch._errors import ConfigError

from ._http_metrics import DEFAULT_MAX_BODY_BYTES, HTTP_MODEL
from .asgi import ASGIApp, MlwatchASGIMiddleware, Receive, Scope, Send

__all__ = ["instrument_app"]

_STATE_KEY = "_mlwatch_middleware"


async def _not_built(scope: Scope, receive: Receive, send: Send) -> None:  # replaced before the first request
    raise RuntimeError("mlwatch: the application's middleware stack was not built")


def instrument_app(
    app: Starlette,
    *,
    model_routes: Mapping[str, str | Mapping[str, Any]] | None = None,
    exclude_paths: Iterable[str] = (),
    http_model: str | None = HTTP_MODEL,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    flush_on_shutdown: bool = True,
    prediction_id_header: str | None = None,
) -> MlwatchASGIMiddleware:
    """Record every request of a FastAPI/Starlette `app`, and model routes' JSON bodies.

    Call it once, before the app serves (a second call returns the first middleware unchanged).
    Options are those of `MlwatchASGIMiddleware`; a wrong one raises `mlwatch.ConfigError` here.
    ``prediction_id_header="X-Prediction-Id"`` sends each model-route prediction's id back in
    that header, for ``mlwatch.log_outcome(prediction_id=...)``.
    """
    if not isinstance(app, Starlette):
        raise ConfigError(f"instrument_app needs a FastAPI or Starlette application, got {app!r}")
    existing = getattr(app, _STATE_KEY, None)
    if isinstance(existing, MlwatchASGIMiddleware):
        return existing
    middleware = MlwatchASGIMiddleware(
        _not_built, model_routes=model_routes, exclude_paths=exclude_paths, http_model=http_model,
        max_body_bytes=max_body_bytes, flush_on_shutdown=flush_on_shutdown, prediction_id_header=prediction_id_header,
    )
    build = app.build_middleware_stack

    def build_middleware_stack() -> ASGIApp:
        middleware.app = build()
        return middleware

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]
    app.middleware_stack = None  # built again, with mlwatch outermost, on the next request
    setattr(app, _STATE_KEY, middleware)
    return middleware
