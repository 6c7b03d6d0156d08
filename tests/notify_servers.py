"""Loopback servers the notification tests deliver to: a webhook receiver and an SMTP server.

`Hooks` answers ``POST /ok/...`` with 200 and keeps the JSON body, ``/fail/...`` with 500, and
``/hang/...`` only after `hang` seconds (the client has given up by then); every request is
recorded by path. `SmtpServer` speaks just enough SMTP (RFC 5321) for `smtplib`: EHLO, MAIL,
RCPT, DATA, QUIT; the messages' bytes are kept. Both run in threads and stop with their ``with`` block.
"""

from __future__ import annotations

import json
import socketserver
import threading
import time
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Hooks", "SmtpHandler", "SmtpServer"]


class _HookHandler(BaseHTTPRequestHandler):
    server: _HookServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        owner = self.server.owner
        with owner.lock:
            owner.requests.append((self.path, time.monotonic()))
        if self.path.startswith("/hang"):
            time.sleep(owner.hang)
        status = 500 if self.path.startswith("/fail") else 200
        if status == 200:
            with owner.lock:
                owner.received.setdefault(self.path, []).append(json.loads(body))
                owner.received_at.setdefault(self.path, []).append(time.monotonic())
        try:
            self.send_response(status)
            self.end_headers()
        except OSError:
            pass  # the client timed out and left

    def log_message(self, *args: Any) -> None:
        pass


class _HookServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: Hooks


class Hooks:
    """A webhook receiver on 127.0.0.1: ``url(path)``; ``received[path]`` JSON bodies, ``requests`` (path, time)."""

    def __init__(self, hang: float = 5.0) -> None:
        self.hang = hang
        self.lock = threading.Lock()
        self.requests: list[tuple[str, float]] = []  # (path, time.monotonic() when it arrived)
        self.received: dict[str, list[Any]] = {}
        self.received_at: dict[str, list[float]] = {}
        self._server = _HookServer(("127.0.0.1", 0), _HookHandler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def count(self, path: str) -> int:
        with self.lock:
            return sum(1 for p, _ in self.requests if p == path)

    def times(self, path: str) -> list[float]:
        with self.lock:
            return [t for p, t in self.requests if p == path]

    def bodies(self, path: str) -> list[Any]:
        with self.lock:
            return list(self.received.get(path, []))

    def __enter__(self) -> Hooks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class SmtpHandler(socketserver.StreamRequestHandler):
    """One SMTP conversation; each message's bytes go to ``server.messages``."""

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        self.reply("220 localhost test smtp")
        while True:
            line = self.rfile.readline()
            if not line:
                return
            cmd = line.decode().strip().upper()
            if cmd.startswith(("EHLO", "HELO")):
                self.reply("250 localhost")
            elif cmd.startswith(("MAIL", "RCPT", "RSET", "NOOP")):
                self.reply("250 OK")
            elif cmd == "DATA":
                self.reply("354 end with .")
                data = b""
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data += chunk
                self.server.messages.append(data)  # type: ignore[attr-defined]
                self.reply("250 queued")
            elif cmd == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("502 not implemented")


class SmtpServer(socketserver.ThreadingTCPServer):
    """A local SMTP server on 127.0.0.1 (``port``); ``messages`` holds what it received."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), SmtpHandler)
        self.messages: list[bytes] = []
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def parsed(self) -> list[Message]:
        return [message_from_bytes(m) for m in list(self.messages)]

    def __enter__(self) -> SmtpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
