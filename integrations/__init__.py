"""Framework integrations: pure ASGI/WSGI middleware and thin FastAPI/Flask modules."""
