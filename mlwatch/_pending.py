"""The bounded state of window profiles waiting for export.

What: `PendingProfiles` keeps at most one not-yet-sent profile per identity (model, version,
segment, window start), each with its encoded bytes: a new profile whose identity is already
pending is merged into it. A payload whose export failed is put back unchanged (same bytes, same
id), never merged, because it may have arrived after all. Two caps bound it: the number of
distinct windows and the total encoded bytes. Over a cap, the oldest window's profiles are
dropped, and their calls counted in ``mlwatch.health()["dropped"]["export_pending_full"]``.

Why: while a collector is down, the naive design (a queue of failed batches) grows without
limit. Here memory stays bounded by the caps, never by the traffic or the length of the outage,
and delivery is at-least-once with receiver-side deduplication by payload id and content hash.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from mlwatch._health import HEALTH
from mlwatch.profile import Profile

__all__ = ["Entry", "PendingProfiles", "identity", "records_of"]

Key = tuple[Any, ...]


def identity(p: Profile) -> Key:
    """What makes two window profiles the same one: (model, version, segment, window start)."""
    return (p.model, p.version, p.segment_key, p.window_start)


def records_of(p: Profile) -> int:
    """The calls (or, for batch profiles, the rows) a profile stands for: what a drop loses."""
    return p.calls or p.rows


@dataclass
class Entry:
    """One pending profile, its encoded bytes (the log record body) and the id of those bytes.

    The id is new whenever the bytes are (re-)encoded and kept while the same bytes are retried,
    so a receiver can drop a payload it already accepted (at-least-once delivery).
    """

    profile: Profile
    data: bytes
    id: str = field(default_factory=lambda: uuid.uuid4().hex)


class PendingProfiles:
    """Thread-safe, bounded, merge-on-collision store of profiles to export."""

    def __init__(self, *, max_bytes: int, max_windows: int, encode: Callable[[Profile], bytes]) -> None:
        self.max_bytes = max_bytes
        self.max_windows = max_windows
        self._encode = encode
        self._lock = threading.Lock()
        self._entries: dict[Key, Entry] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Total encoded size of what is pending."""
        return self._bytes

    def add(self, profiles: Iterable[Profile]) -> None:
        """New closed windows: merge each into its pending identity or add it, then enforce the caps."""
        with self._lock:
            for p in profiles:
                self._put(p)
            self._enforce()

    def put_back(self, entries: Iterable[Entry]) -> None:
        """Payloads whose export failed in a way worth retrying: kept as they are, then the caps enforced.

        A failed send may still have arrived (only the answer was lost), so a retried payload is
        never merged with newer data: it is re-sent with the same bytes and id, which the
        receiver deduplicates. Newer data for the same window travels in its own payload.
        """
        with self._lock:
            for e in entries:
                key = (*identity(e.profile), e.id)
                if key not in self._entries:
                    self._entries[key] = e
                    self._bytes += len(e.data)
            self._enforce()

    def take(self) -> list[Entry]:
        """Remove and return everything pending, oldest window first."""
        with self._lock:
            entries = sorted(self._entries.values(), key=_age)
            self._entries = {}
            self._bytes = 0
        return entries

    def clear(self) -> list[Entry]:
        """Remove everything (at shutdown, what could not be sent); returns it for counting."""
        return self.take()

    # ------------------------------------------------------------------ internals (lock held)
    def _put(self, p: Profile, data: bytes | None = None, payload_id: str | None = None) -> None:
        key = identity(p)
        have = self._entries.pop(key, None)
        if have is not None:
            self._bytes -= len(have.data)
            try:
                p = have.profile.merge(p)  # a new object: profiles being sent are never mutated
                data = payload_id = None
            except Exception as exc:  # incompatible sketches (settings changed): keep the newer one
                HEALTH.count_error("export_merge", exc)
                HEALTH.count_dropped("export_merge", records_of(have.profile))
        if data is None:
            try:
                data = self._encode(p)
            except Exception as exc:
                HEALTH.count_error("export_encode", exc)
                HEALTH.count_dropped("export_encode", records_of(p))
                return
        self._entries[key] = Entry(p, data) if payload_id is None else Entry(p, data, payload_id)
        self._bytes += len(data)

    def _enforce(self) -> None:
        windows = sorted({_window(e) for e in self._entries.values()})
        too_old = set(windows[: max(0, len(windows) - self.max_windows)])
        victims = [k for k, e in self._entries.items() if _window(e) in too_old]
        if self._bytes - sum(len(self._entries[k].data) for k in victims) > self.max_bytes:
            left = sorted((item for item in self._entries.items() if item[0] not in victims), key=lambda kv: _age(kv[1]))
            size = self._bytes - sum(len(self._entries[k].data) for k in victims)
            for k, e in left:
                if size <= self.max_bytes:
                    break
                victims.append(k)
                size -= len(e.data)
        for k in victims:
            e = self._entries.pop(k)
            self._bytes -= len(e.data)
            HEALTH.count_dropped("export_pending_full", records_of(e.profile))


def _window(e: Entry) -> float:
    w = e.profile.window_start
    return float("-inf") if w is None else w


def _age(e: Entry) -> tuple[float, str, str]:
    return (_window(e), e.profile.model, e.profile.segment_key)
