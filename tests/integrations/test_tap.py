"""The ASGI middleware's per-request tap: the C one (mlwatch._speedups.http_tap) answers as PyHttpTap does."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import types
import weakref
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlwatch import _fast
from mlwatch._runtime import RUNTIME
from mlwatch.integrations._tap import PyHttpTap
from mlwatch.integrations.asgi import MlwatchASGIMiddleware

pytestmark = pytest.mark.skipif(_fast.SPEEDUPS is None, reason="mlwatch._speedups is not built")

KINDS = ("http.response.start", "http.response.body", "http.request", "http.disconnect", "lifespan.startup")
byteslike = st.one_of(st.binary(max_size=40), st.binary(max_size=40).map(bytearray), st.binary(max_size=40).map(memoryview))
oddvalue = st.one_of(st.none(), st.integers(-5, 5), st.text(max_size=5), st.lists(st.integers(), max_size=2))
header_name = st.sampled_from([b"content-type", b"Content-Type", b"content-length", b"transfer-encoding", b"host", "content-type"])
header_value = st.one_of(
    st.sampled_from([b"application/json", b"text/plain", b"APPLICATION/JSON; charset=utf-8", b"12", b"0", b"1x", b"", b"9" * 19]),
    st.binary(max_size=12),
    st.text(max_size=5),
)
header = st.one_of(st.tuples(header_name, header_value), st.lists(header_name, max_size=3), st.integers())
headers = st.one_of(st.lists(header, max_size=5), st.none(), st.integers())


@st.composite
def messages(draw: Any) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.one_of(oddvalue, st.dictionaries(st.text(max_size=3), oddvalue, max_size=2)))
    msg: dict[str, Any] = {}
    if draw(st.integers(0, 5)):
        msg["type"] = draw(st.one_of(st.sampled_from(KINDS), oddvalue))
    if draw(st.booleans()):
        msg["body"] = draw(st.one_of(byteslike, oddvalue))
    if draw(st.booleans()):
        msg["status"] = draw(st.one_of(st.integers(100, 599), oddvalue))
    if draw(st.booleans()):
        msg["headers"] = draw(headers)
    return msg


def _state(tap: Any) -> tuple[Any, ...]:
    def plain(b: Any) -> Any:
        return bytes(b) if b is not None else None

    req, resp, over = tap.bodies()
    return (
        tap.status, tap.response_size, tap.request_size, tap.counting, tap.json, tap.error is None,
        plain(req), plain(resp), over, plain(tap.peek_request()), plain(tap.peek_response()),
    )


async def _send(message: Any) -> Any:
    return message


async def _receive() -> Any:
    return {"type": "http.request", "body": b"{}"}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    request_headers=headers, cap=st.sampled_from([-1, 0, 5, 64]),
    steps=st.lists(st.tuples(st.sampled_from(["send", "note", "received"]), messages()), max_size=8),
)
def test_c_tap_answers_as_the_python_tap(request_headers: Any, cap: int, steps: list[tuple[str, Any]]) -> None:
    speedups = _fast.SPEEDUPS
    assert speedups is not None
    taps = [speedups.http_tap(_send, _receive, request_headers, cap), PyHttpTap(_send, _receive, request_headers, cap)]
    for how, message in steps:
        for tap in taps:
            if how == "send":
                coro = tap(message)
                assert asyncio.run(coro) is message  # the server's send got the message itself
            else:
                getattr(tap, how)(message)
        assert _state(taps[0]) == _state(taps[1])


def test_sending_hands_the_servers_awaitable_back_untouched() -> None:
    speedups = _fast.SPEEDUPS
    assert speedups is not None
    seen: list[Any] = []
    answer = object()

    def send(message: Any, *rest: Any, **kw: Any) -> Any:
        seen.append((message, rest, kw))
        return answer

    tap = speedups.http_tap(send, _receive, [], -1)
    msg = {"type": "http.response.start", "status": 204}
    assert tap(msg) is answer and seen[-1][0] is msg
    assert tap(msg, 1, x=2) is answer and seen[-1] == (msg, (1,), {"x": 2})  # odd calls still reach the server
    assert tap.status == 204


def test_interrupts_propagate_and_failures_are_kept() -> None:
    speedups = _fast.SPEEDUPS
    assert speedups is not None

    class Boom(dict):  # type: ignore[type-arg]
        def __init__(self, exc: BaseException) -> None:
            super().__init__()
            self.exc = exc

        def __getitem__(self, key: Any) -> Any:
            raise self.exc

    tap = speedups.http_tap(_send, _receive, [], 10)
    with pytest.raises(KeyboardInterrupt):
        tap.note(Boom(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        tap.received(Boom(KeyboardInterrupt()))
    failure = ValueError("odd message")
    tap.note(Boom(failure))
    assert tap.error is failure


def test_a_tap_in_a_reference_cycle_is_collected() -> None:
    speedups = _fast.SPEEDUPS
    assert speedups is not None

    class Send:
        tap: Any = None

        def __call__(self, message: Any) -> None:
            return None

    send = Send()
    tap = speedups.http_tap(send, _receive, [], 10)
    send.tap = tap  # tap -> send -> tap
    ref = weakref.ref(send)
    del send, tap
    gc.collect()
    assert ref() is None


def _records(speedups_on: bool, monkeypatch: pytest.MonkeyPatch, tracked: list[bool] | None = None) -> tuple[list[list[tuple[Any, ...]]], int]:
    """The records the middleware buffers for a set of requests, recorded by the C tap or by Python,
    and how many requests went through the Python recording."""
    monkeypatch.setattr(_fast, "SPEEDUPS", _fast.SPEEDUPS if speedups_on else None)
    mw = MlwatchASGIMiddleware(_app, model_routes={"/predict": "fraud-tap-" + ("c" if speedups_on else "py")}, max_body_bytes=64)
    python_path = [0]
    record = mw._record

    def counted(*args: Any) -> None:
        python_path[0] += 1
        record(*args)

    monkeypatch.setattr(mw, "_record", counted)
    queues = [mw.telemetry.http.queue, mw.telemetry.models.exact["/predict"][1].recorder.queue]  # type: ignore[union-attr]
    RUNTIME.start_worker()  # (a worker not running is a case the C tap leaves to Python)
    saved, RUNTIME.batch_size = RUNTIME.batch_size, 1 << 40
    with RUNTIME.lock:  # the aggregator keeps away from these queues meanwhile
        out = _run_cases(mw, queues, saved, tracked)
    return out, python_path[0]


def _run_cases(mw: MlwatchASGIMiddleware, queues: list[Any], batch_size: int, tracked: list[bool] | None) -> list[list[tuple[Any, ...]]]:
    try:
        for case in CASES:
            scope = {"type": "http", "method": case[0], "scheme": "http", "path": case[1], "headers": case[2], "case": case}

            async def receive(case: Any = case) -> Any:
                return {"type": "http.request", "body": case[3], "more_body": False}

            async def send(message: Any) -> None:
                return None

            with contextlib.suppress(RuntimeError):
                asyncio.run(mw(scope, receive, send))
        if tracked is not None:
            tracked.extend(gc.is_tracked(r) for q in queues for r in q)
        return [[r[2:] for r in q] for q in queues]  # start times and durations aside
    finally:
        RUNTIME.batch_size = batch_size
        for q in queues:
            q.clear()


class _Route:
    path = "/predict"


async def _app(scope: Any, receive: Any, send: Any) -> None:
    _, path, _, _, status, answer, content_type, fail = scope["case"]
    if path == "/predict":
        scope["route"] = _Route()
    await receive()
    if fail == "before":
        raise RuntimeError("handler failed")
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type)]})
    await send({"type": "http.response.body", "body": answer})
    if fail == "after":
        raise RuntimeError("handler failed after answering")


_H = [(b"content-type", b"application/json"), (b"content-length", b"10")]
CASES = [
    ("POST", "/predict", _H, b'{"a": 1.5}', 200, b'{"score": 0.5}', b"application/json", None),
    ("POST", "/predict", _H, b'{"a": 1.5}', 422, b'{"detail": "no"}', b"application/json", None),
    ("POST", "/predict", _H, b'{"a": 1.5}', 200, b"plain text", b"text/plain", None),
    ("POST", "/predict", _H, b'{"a": 1.5}', 200, b"x" * 100, b"application/json", None),  # response over the cap
    ("POST", "/predict", [(b"transfer-encoding", b"chunked")], b'{"a": 2}', 200, b"{}", b"application/json", None),
    ("POST", "/predict", _H, b'{"a": 1.5}', 200, b"{}", b"application/json", "before"),
    ("POST", "/predict", _H, b'{"a": 1.5}', 200, b"{}", b"application/json", "after"),
    ("get", "/other", [], b"", 404, b"missing", b"text/plain", None),
    ("GET", "/other", [(b"content-length", b"abc")], b"", 200, b"{}", b"application/json", None),
]


def test_records_buffered_in_c_are_those_python_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    """HttpTap.finish buffers exactly the records the Python path does (durations and start times aside)."""
    tracked: list[bool] = []
    c_records, c_declined = _records(True, monkeypatch, tracked)
    py_records, py_declined = _records(False, monkeypatch)
    assert c_records == py_records
    assert (c_declined, py_declined) == (1, len(CASES))  # C leaves only the body over the cap to Python
    http, model = c_records
    assert len(http) == len(CASES)
    assert len(model) == len(CASES) - 1 - 2  # the 422 is no model call; the two /other requests are on no model route
    # the records C buffered (all but the one over the cap) wait out of the garbage collector's sight
    assert tracked.count(False) == len(http) + len(model) - 2


def _taps(receive: Any, cap: int = 64) -> list[Any]:
    speedups = _fast.SPEEDUPS
    assert speedups is not None
    return [speedups.http_tap(_send, receive, [], cap), PyHttpTap(_send, receive, [], cap)]


class _Awaitable:
    """An awaitable that is not a coroutine (its __await__ is a generator)."""

    def __init__(self, message: Any) -> None:
        self.message = message

    def __await__(self) -> Any:
        yield None  # suspends once, as a server's receive may
        return self.message


@pytest.mark.parametrize("kind", ["coroutine", "future", "awaitable", "generator"])
def test_receive_gives_the_app_the_servers_message(kind: str) -> None:
    """Whatever awaitable the server's receive returns, the app gets its message itself, and the tap sees the body."""
    message = {"type": "http.request", "body": b'{"a": 1}', "more_body": False}

    @types.coroutine
    def generator() -> Any:
        yield None
        return message

    async def coroutine() -> Any:
        await asyncio.sleep(0)
        return message

    def receive() -> Any:
        if kind == "coroutine":
            return coroutine()
        if kind == "generator":
            return generator()
        if kind == "awaitable":
            return _Awaitable(message)
        future = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(future.set_result, message)
        return future

    async def app(tap: Any) -> Any:
        return await tap.receive()

    for tap in _taps(receive):
        assert asyncio.run(app(tap)) is message
        assert tap.peek_request() == b'{"a": 1}'


def test_receive_passes_cancellation_and_errors_through() -> None:
    """A cancelled app's receive cancels the server's; the server's exception reaches the app as it is."""
    failure = OSError("connection reset")
    cleaned: list[str] = []

    async def waits_forever() -> Any:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append("server receive closed")

    async def fails() -> Any:
        raise failure

    async def cancelled(tap: Any) -> None:
        task = asyncio.ensure_future(tap.receive())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    for tap in _taps(waits_forever):
        asyncio.run(cancelled(tap))
        assert tap.peek_request() is None and tap.error is None
    assert cleaned == ["server receive closed"] * 2
    for tap in _taps(fails):
        with pytest.raises(OSError, match="connection reset") as info:
            asyncio.run(_await(tap.receive()))
        assert info.value is failure


async def _await(awaitable: Any) -> Any:
    return await awaitable


def test_a_receive_answering_a_cancellation_with_a_message_is_seen() -> None:
    """A server receive that catches the cancellation and returns a message: the app gets it, the tap notes it."""
    disconnect = {"type": "http.request", "body": b"partial", "more_body": False}

    async def receive() -> Any:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return disconnect

    async def app(tap: Any) -> Any:
        task = asyncio.ensure_future(_await(tap.receive()))
        await asyncio.sleep(0)
        task.cancel()
        return await task

    for tap in _taps(receive):
        assert asyncio.run(app(tap)) is disconnect
        assert tap.peek_request() == b"partial"


def test_an_awaited_receive_cannot_be_awaited_again() -> None:
    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    async def twice(tap: Any) -> None:
        waiting = tap.receive()
        await waiting
        with pytest.raises(RuntimeError):
            await waiting

    for tap in _taps(receive):
        asyncio.run(twice(tap))


@pytest.mark.parametrize("delta", range(4))
def test_a_finalizer_resetting_the_body_while_a_chunk_is_kept(delta: int) -> None:
    """The garbage collector may run while a second chunk is being kept, and a finalizer may call the
    tap meanwhile (here: a new JSON response start, which resets the body): the chunk is dropped, and
    what the tap holds stays whole (it once read freed memory here)."""
    speedups = _fast.SPEEDUPS
    assert speedups is not None
    tap = speedups.http_tap(_send, _receive, [], 100)
    start = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    tap.note(start)
    tap.note({"type": "http.response.body", "body": bytearray(b"abc")})  # copied: the tap holds the only reference
    ran: list[int] = []

    class Finalizer:
        me: Any = None

        def __del__(self) -> None:
            ran.append(1)
            tap.note(start)

    gc.collect()
    doomed = Finalizer()
    doomed.me = doomed
    del doomed
    threshold = gc.get_threshold()
    gc.set_threshold(gc.get_count()[0] + delta)  # the next few allocations run a collection
    try:
        tap.note({"type": "http.response.body", "body": bytearray(b"defg")})
    finally:
        gc.set_threshold(*threshold)
    gc.collect()
    junk = [bytes(5) for _ in range(100)]  # reuse of freed memory would show in the body
    assert tap.peek_response() in (None, b"abcdefg", b"defg")
    assert tap.peek_response() in (None, b"abcdefg", b"defg") and len(junk) == 100


def test_the_servers_receive_is_called_when_awaited_not_before() -> None:
    """As with a coroutine, calling receive() does nothing until it is awaited (or closed unawaited)."""
    calls: list[int] = []

    async def receive() -> Any:
        calls.append(1)
        return {"type": "http.request", "body": b"x"}

    for tap in _taps(receive):
        waiting = tap.receive()
        assert calls == []
        assert asyncio.run(_await(waiting))["body"] == b"x"
        assert calls == [1]
        calls.clear()
        tap.receive().close()
        with pytest.raises(ValueError, match="thrown"):
            tap.receive().throw(ValueError("thrown"))
        assert calls == []
