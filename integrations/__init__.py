"""Framework integrations: pure ASGI/WSGI middleware and thin FastAPI/Flask modules.

- `mlwatch.integrations.asgi`: `MlwatchASGIMiddleware`, for any ASGI app (no framework import).
- `mlwatch.integrations.wsgi`: `MlwatchWSGIMiddleware`, for any WSGI app (no framework import).
- `mlwatch.integrations.fastapi`: `instrument_app(app, ...)` (``pip install "mlwatch[fastapi]"``).
- `mlwatch.integrations.flask`: `instrument_app(app, ...)` (``pip install "mlwatch[flask]"``).

Nothing is imported here, so ``import mlwatch.integrations`` costs nothing. See docs/integrations.md.
"""

__all__: list[str] = []
