"""``python -m mlwatch.collector``: the same as ``mlwatch collector``."""

from __future__ import annotations

import sys

from mlwatch.collector.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
