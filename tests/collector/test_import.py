"""`import mlwatch` stays free of the collector's web and database dependencies."""

from __future__ import annotations

import subprocess
import sys


def test_core_import_does_not_load_collector_dependencies() -> None:
    """starlette, uvicorn, psycopg and the collector package are not imported by `import mlwatch`."""
    code = (
        "import sys, mlwatch, mlwatch.cli; "
        "bad = [m for m in ('starlette', 'uvicorn', 'psycopg', 'prometheus_client', 'mlwatch.collector') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == ""
