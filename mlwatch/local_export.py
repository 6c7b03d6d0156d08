"""The embedded default exporter: one profile file per window, with bounded disk use."""

from __future__ import annotations

import os
import re
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path

from mlwatch._health import HEALTH
from mlwatch.profile import Profile

__all__ = ["LocalFileExporter"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def _safe(part: str) -> str:
    return _UNSAFE.sub("_", part)[:80] or "_"


class LocalFileExporter:
    """Writes ``<dir>/<model>/<window start>-<segment>-<process>.mlw``; deletes the oldest files
    beyond `max_bytes`. Files are written atomically, so readers never see half a profile."""

    def __init__(self, directory: str | os.PathLike[str] = "./mlwatch-data", *, max_bytes: int = 512 * 1024 * 1024) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._instance = uuid.uuid4().hex[:12]

    def path_for(self, p: Profile) -> Path:
        window = f"{int(p.window_start or 0):012d}"
        seg = _safe(p.segment_key) if p.segment else "all"
        version = _safe(p.version) if p.version else "none"
        return self.directory / _safe(p.model) / f"{window}-{version}-{seg}-{self._instance}-{os.getpid()}-{uuid.uuid4().hex[:6]}.mlw"

    def export(self, profiles: Sequence[Profile]) -> None:
        with self._lock:
            for p in profiles:
                path = self.path_for(p)
                path.parent.mkdir(parents=True, exist_ok=True)
                p.save(path)
            self._enforce_budget()

    def _enforce_budget(self) -> None:
        files = []
        total = 0
        for f in self.directory.rglob("*.mlw"):
            try:
                st = f.stat()
            except OSError:
                continue
            files.append((st.st_mtime, f, st.st_size))
            total += st.st_size
        if total <= self.max_bytes:
            return
        for _, f, size in sorted(files):
            try:
                f.unlink()
            except OSError:
                continue
            HEALTH.count_dropped("disk_budget")
            total -= size
            if total <= self.max_bytes:
                break

    def shutdown(self) -> None:
        return None

    @staticmethod
    def read(directory: str | os.PathLike[str], model: str | None = None) -> list[Profile]:
        """Every profile under `directory` (optionally one model's), oldest window first."""
        root = Path(directory)
        if model is not None:
            root = root / _safe(model)
        paths = sorted(root.rglob("*.mlw"))
        return [Profile.load(p) for p in paths]
