"""One request's tap for the ASGI middleware: the app's ``send``, and where its request messages are reported.

What: a tap (`PyHttpTap(send, receive, headers, cap)`, or ``mlwatch._speedups.http_tap`` with the
same arguments when the extension is in use) is the object the middleware hands the app as ``send``.
Called with a message, it notes the status, counts the response body's bytes and, with
``cap >= 0`` (a model route), keeps a JSON response's body up to `cap` bytes; then it calls the
server's ``send`` with the same message and returns its awaitable (no coroutine of ours in
between). Its ``receive`` method, handed to the app as ``receive`` when the body matters, awaits the
server's ``receive`` and reports each message to `received`, which counts a chunked request body's
bytes and keeps the body (``cap >= 0``); in C that is an awaitable object passing ``send``,
``throw`` and ``close`` down to the server's awaitable as a coroutine's ``await`` would. The
request body's size comes from the scope's ``content-length`` header (up to 18 digits; otherwise
unknown, None), or is counted as read when the body is chunked. ``bodies()`` gives what was kept
at the end, ``peek_request()`` / ``peek_response()`` what is kept so far. The C tap's ``finish``
buffers the request's records itself in the common case (see its docstring); `PyHttpTap.finish`
always leaves that to the middleware's Python path.

Why: per request, the middleware's Python closures and two `BodyBuffer` objects cost more than
everything else it does on the request path, so `mlwatch._speedups.http_tap` does this in C when
the extension is built. `PyHttpTap` is the same object in Python (the fallback; tests compare the
two on arbitrary messages). Nothing here raises into the app: a failure while reading a message
is kept in ``error`` (the middleware counts it) and the message goes to the server unchanged.
Header names and values that are not bytes are skipped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from operator import index
from typing import Any, Protocol

from ._body import BodyBuffer

__all__ = ["HttpTap", "PyHttpTap"]

_BYTES = (bytes, bytearray)


class HttpTap(Protocol):
    """What the middleware reads from a tap (`PyHttpTap`, or `mlwatch._speedups.HttpTap`)."""

    status: int
    response_size: int
    request_size: int | None
    counting: bool
    json: bool
    error: BaseException | None

    def __call__(self, message: Any) -> Awaitable[None]: ...
    def receive(self) -> Awaitable[Any]: ...
    def note(self, message: Any) -> None: ...
    def received(self, message: Any) -> None: ...
    def bodies(self) -> tuple[bytes | None, bytes | None, int]: ...
    def finish(
        self, http: Any, model: Any, t0: int, duration: int, error: BaseException | None, scope: Any, method: str, scheme: str, active: int
    ) -> bool: ...
    def peek_request(self) -> bytes | None: ...
    def peek_response(self) -> bytes | None: ...


def _is_json(headers: Iterable[Any]) -> bool:
    """Whether the first content-type header says JSON."""
    for header in headers:
        name, value = header
        if isinstance(name, _BYTES) and name.lower() == b"content-type":
            # find(), not `in`: bytes.__contains__ first tries its argument as an int, and the
            # TypeError it raises and clears costs more than the whole search
            return isinstance(value, _BYTES) and value.lower().find(b"json") != -1
    return False


class PyHttpTap:
    """The tap in Python (see the module's docstring); `mlwatch._speedups.http_tap` is the same in C."""

    __slots__ = ("_receive", "_request", "_response", "cap", "counting", "error", "json", "request_size", "response_size", "send", "status")

    def __init__(self, send: Callable[[Any], Awaitable[None]], receive: Callable[[], Awaitable[Any]], headers: Iterable[Any], cap: int) -> None:
        self.send = send
        self._receive = receive
        self.cap = index(cap)
        self.status = 0
        self.response_size = 0
        self.request_size: int | None = 0
        self.counting = False
        self.json = False
        self.error: BaseException | None = None
        self._request = BodyBuffer(cap) if cap >= 0 else None
        self._response: BodyBuffer | None = None
        try:
            chunked = False
            for header in headers:
                name, value = header
                if isinstance(name, _BYTES) and name == b"content-length":
                    ok = isinstance(value, _BYTES) and 0 < len(value) <= 18 and value.isdigit()
                    self.request_size = int(value) if ok else None
                    break
                if isinstance(name, _BYTES) and name == b"transfer-encoding":
                    chunked = True
            self.counting = chunked and self.request_size == 0
        except Exception as exc:
            self.error = exc
            self.request_size = None

    def __call__(self, message: Any) -> Awaitable[None]:
        self.note(message)
        return self.send(message)

    async def receive(self) -> Any:
        """The server's ``receive``, for the app: the message it gives is reported to `received`."""
        message = await self._receive()
        self.received(message)
        return message

    def note(self, message: Any) -> None:
        """What the app sends, noted without sending it."""
        try:
            kind = message["type"]
            if kind == "http.response.body":
                body = message.get("body", b"")
                n = len(body)
                self.response_size += n
                if self.json and self._response is not None:
                    self._response.add(body)
            elif kind == "http.response.start":
                self.status = index(message["status"])
                if self.cap >= 0 and _is_json(message.get("headers", ())):
                    self.json = True
                    self._response = BodyBuffer(self.cap)
        except Exception as exc:
            self.error = exc

    def received(self, message: Any) -> None:
        """A message the app received: a request body chunk is counted (chunked bodies) and kept."""
        try:
            if message["type"] == "http.request":
                body = message.get("body", b"")
                n = len(body)
                if self.counting and self.request_size is not None:
                    self.request_size += n
                if self._request is not None:
                    self._request.add(body)
        except Exception as exc:
            self.error = exc

    def bodies(self) -> tuple[bytes | None, bytes | None, int]:
        """(the request body or None, the JSON response body or None, how many bodies went over the cap)."""
        request, response = self._request, self._response  # a response body is kept only when it is JSON
        over = (request is not None and request.over) + (response is not None and response.over)
        return self.peek_request(), self.peek_response(), over

    def finish(
        self, http: Any, model: Any, t0: int, duration: int, error: BaseException | None, scope: Any, method: str, scheme: str, active: int
    ) -> bool:
        """The C tap buffers the request's records itself; here the middleware's Python recording does (False)."""
        return False

    def peek_request(self) -> bytes | None:
        return self._request.peek() if self._request is not None else None

    def peek_response(self) -> bytes | None:
        return self._response.peek() if self._response is not None else None
