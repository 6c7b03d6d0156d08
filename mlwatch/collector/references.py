"""Which profile a window is compared with: the uploaded reference, or a moving one.

``mode="uploaded"`` uses the model's uploaded reference profile; ``mode="moving"`` merges the
`n` latest windows before the queried range (the same baseline for every window of the range);
``mode="auto"`` (the default) is the uploaded one when there is one, else the moving one.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread

from mlwatch.collector.errors import HttpError
from mlwatch.collector.query import RangeReader
from mlwatch.collector.store import Filters

__all__ = ["MODES", "resolve_reference"]

MODES = ("auto", "uploaded", "moving")


async def resolve_reference(
    reader: RangeReader, model: str, before: float, filters: Filters, mode: str, n_windows: int
) -> tuple[list[bytes], dict[str, Any]]:
    """The reference's parts and a description of it; 404 when the model has none of that kind."""
    if mode not in MODES:
        raise HttpError(400, "bad_parameter", f"reference must be one of {', '.join(MODES)}, got {mode!r}")
    if mode in ("auto", "uploaded"):
        ref = await anyio.to_thread.run_sync(reader.store.get_reference, model)
        if ref is not None:
            return [ref.payload], {"kind": "uploaded", "uploaded_at": ref.uploaded_at, "source": ref.source}
        if mode == "uploaded":
            raise HttpError(404, "no_reference", f"model {model!r} has no uploaded reference (PUT /api/models/{model}/reference)")
    parts, first = await reader.moving_reference(model, before, n_windows, filters)
    if not parts:
        raise HttpError(
            404, "no_reference",
            f"model {model!r} has no uploaded reference and no windows before {before:g} to build a moving one",
        )
    return [p.payload for p in parts], {"kind": "moving", "windows": n_windows, "start": first, "end": before}
