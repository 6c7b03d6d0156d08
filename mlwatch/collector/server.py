"""Run the collector app under uvicorn with the configured address and TLS."""

from __future__ import annotations

import socket

import uvicorn

from mlwatch.collector.app import create_app
from mlwatch.collector.config import CollectorConfig

__all__ = ["build_server", "serve"]


def build_server(config: CollectorConfig, *, log_level: str = "info") -> uvicorn.Server:
    """A configured (not yet started) uvicorn server for the collector."""
    uv = uvicorn.Config(
        create_app(config),
        host=config.host,
        port=config.port,
        ssl_certfile=config.certfile,
        ssl_keyfile=config.keyfile,
        log_level=log_level,
        access_log=log_level == "debug",
        server_header=False,
        proxy_headers=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    return uvicorn.Server(uv)


def serve(config: CollectorConfig, *, log_level: str = "info", sock: socket.socket | None = None) -> None:
    """Serve until interrupted (SIGINT/SIGTERM); `sock` lets tests hand over a pre-bound socket."""
    server = build_server(config, log_level=log_level)
    server.run(sockets=[sock] if sock is not None else None)
