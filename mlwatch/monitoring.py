"""`@monitor` and `observe()`: capture a model's calls without hurting the caller.

The wrapper built per calling convention (sync, async, generator, async generator) does only
this on the caller's thread: two `perf_counter_ns()` calls around the user's function and one
`Recorder.record()` (an append to a bounded deque). The user's exception is re-raised untouched:
same object, same traceback. The signature is inspected once, at decoration time.

Plain closures rather than `wrapt.FunctionWrapper`: measured on this machine, wrapt's
passthrough costs ~1.5 µs a call, as much as everything else on the hot path together, and
`functools.wraps` plus explicit staticmethod/classmethod handling gives the semantics we need.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from time import perf_counter_ns
from types import TracebackType
from typing import Any, TypeVar, cast, overload

from mlwatch import _fast
from mlwatch._errors import ConfigError
from mlwatch._extract import Binding
from mlwatch._health import HEALTH
from mlwatch._runtime import RUNTIME, Recorder
from mlwatch._snapshot import snapshot
from mlwatch.config import check_window
from mlwatch.profiling import ProfileConfig

__all__ = ["Observation", "monitor", "observe"]

F = TypeVar("F", bound=Callable[..., Any])

#: Annotations that cannot carry a named feature, for checking `segment_by` at decoration time.
_SCALAR_ANNOTATIONS = {int, float, str, bool, bytes, "int", "float", "str", "bool", "bytes"}


def _check_model(model: Any) -> str:
    if not isinstance(model, str) or not model.strip():
        raise ConfigError(f"model must be a non-empty string, got {model!r}")
    return model


def _segment_names(segment_by: Any) -> tuple[str, ...]:
    if segment_by is None:
        return ()
    if isinstance(segment_by, str):
        segment_by = [segment_by]
    names = tuple(segment_by)
    if not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"segment_by must be a list of feature or argument names, got {segment_by!r}")
    return names


def _check_segments(fn: Callable[..., Any], binding: Binding, segment_by: tuple[str, ...]) -> None:
    """A segment must name an argument, or the function must take something that carries features."""
    if not segment_by:
        return
    try:
        params = list(inspect.signature(fn).parameters.values())[binding.skip :]
    except (TypeError, ValueError):
        return
    names = {p.name for p in params}
    carriers = [
        p for p in params
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or p.annotation is inspect.Parameter.empty or p.annotation not in _SCALAR_ANNOTATIONS
    ]
    for key in segment_by:
        if key not in names and not carriers:
            raise ConfigError(
                f"segment_by={key!r} names no argument of {fn.__qualname__}{inspect.signature(fn)}, "
                "and no argument can carry features"
            )


def _make_recorder(
    *,
    model: str,
    version: str | None,
    binding: Binding,
    segment_by: tuple[str, ...],
    sample_rate: float,
    window_seconds: float | None,
    config: ProfileConfig,
    feature_names: tuple[str, ...] | None = None,
) -> Recorder:
    output_config = ProfileConfig(
        categorical=config.categorical | {"predicted_class"},
        kll_k=config.kll_k,
        freq_lg=config.freq_lg,
        hll_lg=config.hll_lg,
        n_extremes=config.n_extremes,
        max_category_length=config.max_category_length,
    )
    rec = Recorder(
        RUNTIME,
        model=model,
        version=version,
        binding=binding,
        config=config,
        output_config=output_config,
        segment_by=segment_by,
        sample_rate=sample_rate,
        window_seconds=window_seconds,
        feature_names=feature_names,
    )
    RUNTIME.add_recorder(rec)
    return rec


def _options(
    model: Any,
    version: Any,
    segment_by: Any,
    sample_rate: Any,
    window_seconds: Any,
    profile_options: dict[str, Any],
) -> tuple[str, str | None, tuple[str, ...], float, float | None, ProfileConfig, tuple[str, ...] | None]:
    model = _check_model(model)
    feature_names = profile_options.pop("feature_names", None)
    if feature_names is not None:
        if isinstance(feature_names, str) or not all(isinstance(n, str) for n in feature_names):
            raise ConfigError(f"feature_names must be a list of strings, got {feature_names!r}")
        feature_names = tuple(feature_names)
    if version is not None and not isinstance(version, str):
        version = str(version)
    names = _segment_names(segment_by)
    if type(sample_rate) not in (int, float) or not 0 < sample_rate <= 1:
        raise ConfigError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
    window = None if window_seconds is None else check_window(window_seconds)
    try:
        config = ProfileConfig.build(**profile_options)
    except TypeError as exc:
        raise ConfigError(f"unknown monitor option: {exc}") from None
    return model, version, names, float(sample_rate), window, config, feature_names


@overload
def monitor(fn: F, /) -> F: ...
@overload
def monitor(
    *,
    model: str = ...,
    version: str | None = ...,
    segment_by: Iterable[str] | str | None = ...,
    sample_rate: float = ...,
    window_seconds: float | None = ...,
    feature_names: Iterable[str] | None = ...,
    inputs: Iterable[str] | None = ...,
    exclude: Iterable[str] | None = ...,
    categorical: Iterable[str] | None = ...,
    numeric: Iterable[str] | None = ...,
    text: Iterable[str] | None = ...,
    kll_k: int = ...,
    prediction_ids: bool = ...,
) -> Callable[[F], F]: ...


def monitor(
    fn: Any = None,
    /,
    *,
    model: str | None = None,
    version: str | None = None,
    segment_by: Iterable[str] | str | None = None,
    sample_rate: float = 1.0,
    window_seconds: float | None = None,
    prediction_ids: bool = False,
    **profile_options: Any,
) -> Any:
    """Monitor a predict function: latency, errors, inputs and outputs, per window and segment.

    With ``prediction_ids=True`` each call can be given an id afterwards
    (`mlwatch.current_prediction_id()`) to join its label later (`mlwatch.log_outcome`); this adds
    one `ContextVar.set` per call, and only to this function (see `mlwatch.outcomes`).

    Works on functions, async functions, generators, methods, staticmethods and classmethods.
    Options are checked here, at decoration time; a wrong one raises `ConfigError`.
    Profile options (`inputs`, `exclude`, `categorical`, `numeric`, `text`, `kll_k`, ...) are
    those of `mlwatch.ProfileConfig`.
    """
    if fn is not None and callable(fn) and model is None:  # bare @monitor: the function's name is the model
        return monitor(model=getattr(fn, "__name__", "model"))(fn)
    opts = _options(model if model is not None else "", version, segment_by, sample_rate, window_seconds, profile_options)
    if type(prediction_ids) is not bool:
        raise ConfigError(f"prediction_ids must be True or False, got {prediction_ids!r}")

    def decorate(target: Any) -> Any:
        if isinstance(target, (staticmethod, classmethod)):
            return type(target)(_wrap(target.__func__, opts, is_method=isinstance(target, classmethod), prediction_ids=prediction_ids))
        if not callable(target):
            raise ConfigError(f"@monitor needs a function, got {target!r}")
        return _wrap(target, opts, is_method=None, prediction_ids=prediction_ids)

    return decorate


def _is_method(fn: Callable[..., Any]) -> bool:
    """A function defined in a class body whose first parameter is self or cls."""
    parts = getattr(fn, "__qualname__", "").split(".")
    try:
        first = next(iter(inspect.signature(fn).parameters), None)
    except (TypeError, ValueError):
        return False
    return len(parts) > 1 and parts[-2] != "<locals>" and first in ("self", "cls")


def _wrap(fn: Callable[..., Any], opts: tuple[Any, ...], *, is_method: bool | None, prediction_ids: bool = False) -> Callable[..., Any]:
    model, version, segment_by, sample_rate, window, config, feature_names = opts
    binding = Binding.of(fn, is_method=_is_method(fn) if is_method is None else is_method)
    _check_segments(fn, binding, segment_by)
    rec = _make_recorder(
        model=model, version=version, binding=binding, segment_by=segment_by,
        sample_rate=sample_rate, window_seconds=window, config=config, feature_names=feature_names,
    )
    record = rec.record
    if prediction_ids:
        from mlwatch.outcomes import LAST_CALL, REQUEST_CALLS

        set_last = LAST_CALL.set
        request_calls = REQUEST_CALLS.get  # set by the HTTP middleware when it sends the id in a header
        inner_record = record

        def record(t0: int, duration: int, args: tuple[Any, ...], kwargs: dict[str, Any] | None, result: Any, exc: BaseException | None) -> None:
            inner_record(t0, duration, args, kwargs, result, exc)
            if exc is None:
                call = (rec, args, kwargs, result)
                set_last(call)  # the id is minted lazily, if ever asked for
                box = request_calls()
                if box is not None:
                    box.calls[model] = call

        if not (inspect.isasyncgenfunction(fn) or inspect.iscoroutinefunction(fn) or inspect.isgeneratorfunction(fn)):

            @functools.wraps(fn)
            def ids_wrapper(*args: Any, **kwargs: Any) -> Any:  # the common case without the extra call layer
                t0 = perf_counter_ns()
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    inner_record(t0, perf_counter_ns() - t0, args, kwargs, None, exc)
                    raise
                inner_record(t0, perf_counter_ns() - t0, args, kwargs, result, None)
                call = (rec, args, kwargs, result)
                set_last(call)
                box = request_calls()
                if box is not None:
                    box.calls[model] = call
                return result

            ids_wrapper.__mlwatch_recorder__ = rec  # type: ignore[attr-defined]
            return ids_wrapper

    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def agen_wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = perf_counter_ns()
            try:
                async for item in fn(*args, **kwargs):
                    yield item
            except BaseException as exc:
                record(t0, perf_counter_ns() - t0, args, kwargs, None, exc)
                raise
            record(t0, perf_counter_ns() - t0, args, kwargs, None, None)

        return agen_wrapper

    state = rec.plain_state() if not prediction_ids else None
    if state is not None:  # the common call buffered in C (mlwatch._speedups), anything else by `record`
        record_plain = _fast.SPEEDUPS.record_plain  # type: ignore[union-attr]  # plain_state checked it

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = perf_counter_ns()
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                record(t0, perf_counter_ns() - t0, args, kwargs, None, exc)
                raise
            duration = perf_counter_ns() - t0
            if state is None or not record_plain(state, t0, duration, args, kwargs, result):
                record(t0, duration, args, kwargs, result, None)
            return result

        return async_wrapper

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = perf_counter_ns()
            try:
                result = yield from fn(*args, **kwargs)
            except BaseException as exc:
                record(t0, perf_counter_ns() - t0, args, kwargs, None, exc)
                raise
            record(t0, perf_counter_ns() - t0, args, kwargs, None, None)
            return result

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = perf_counter_ns()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            record(t0, perf_counter_ns() - t0, args, kwargs, None, exc)
            raise
        duration = perf_counter_ns() - t0
        if state is None or not record_plain(state, t0, duration, args, kwargs, result):
            record(t0, duration, args, kwargs, result, None)
        return result

    wrapper.__mlwatch_recorder__ = rec  # type: ignore[attr-defined]
    return wrapper


class Observation:
    """`with mlwatch.observe(model=...) as obs:` for code that is not one function."""

    __slots__ = ("_ids", "_inputs", "_outputs", "_recorder", "_t0")

    def __init__(self, recorder: Recorder, prediction_ids: bool = False) -> None:
        self._recorder = recorder
        self._ids = prediction_ids
        self._inputs: Any = None
        self._outputs: Any = None
        self._t0 = 0

    def inputs(self, features: Any) -> None:
        """The features the model sees (copied now, so later changes do not leak in)."""
        try:
            self._inputs = snapshot(features)
        except Exception as exc:
            HEALTH.count_error("capture", exc)

    def outputs(self, result: Any) -> None:
        """What the model returned."""
        self._outputs = result

    def __enter__(self) -> Observation:
        self._t0 = perf_counter_ns()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        duration = perf_counter_ns() - self._t0
        args = () if self._inputs is None else (self._inputs,)
        self._recorder.record(self._t0, duration, args, None, self._outputs, exc)
        if self._ids and exc is None:
            from mlwatch.outcomes import LAST_CALL, REQUEST_CALLS

            call = (self._recorder, args, None, self._outputs)
            LAST_CALL.set(call)
            box = REQUEST_CALLS.get()
            if box is not None:
                box.calls[self._recorder.model] = call


_OBSERVE_RECORDERS: dict[tuple[Any, ...], Recorder] = {}


def observe(
    *,
    model: str,
    version: str | None = None,
    segment_by: Iterable[str] | str | None = None,
    sample_rate: float = 1.0,
    window_seconds: float | None = None,
    prediction_ids: bool = False,
    **profile_options: Any,
) -> Observation:
    """A context manager recording one prediction made by any code: latency, error, inputs, outputs.

    The options are those of `monitor` (``prediction_ids=True``: `mlwatch.current_prediction_id()`
    works after the block); the same options share one buffer, so creating an observation costs
    a dictionary lookup after the first.
    """
    key = (model, version, tuple(segment_by) if isinstance(segment_by, (list, tuple)) else segment_by,
           sample_rate, window_seconds, tuple(sorted((k, _freeze(v)) for k, v in profile_options.items())))
    rec = _OBSERVE_RECORDERS.get(key)
    if rec is None:
        opts = _options(model, version, segment_by, sample_rate, window_seconds, profile_options)
        rec = _make_recorder(
            model=opts[0], version=opts[1], binding=Binding(("features",), 0, None), segment_by=opts[2],
            sample_rate=opts[3], window_seconds=opts[4], config=opts[5], feature_names=opts[6],
        )
        _OBSERVE_RECORDERS[key] = rec
    return Observation(rec, prediction_ids is True)


def _freeze(value: Any) -> Any:
    if isinstance(value, (list, tuple, set, frozenset)):
        return tuple(sorted(map(str, value)))
    return value


def recorder_of(fn: Callable[..., Any]) -> Recorder | None:
    """The recorder behind a monitored function (for tests and the testing helpers)."""
    return cast("Recorder | None", getattr(fn, "__mlwatch_recorder__", None))

