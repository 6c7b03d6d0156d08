"""The public API: everything in mlwatch.__all__ exists, and __all__ is sorted."""

from __future__ import annotations

import mlwatch


def test_all_sorted_and_present() -> None:
    """mlwatch.__all__ is sorted (case-sensitively) and names only real attributes."""
    assert list(mlwatch.__all__) == sorted(mlwatch.__all__)
    missing = [name for name in mlwatch.__all__ if not hasattr(mlwatch, name)]
    assert missing == []


def test_public_callables_documented() -> None:
    """Every public function and class has a docstring."""
    undocumented = [n for n in mlwatch.__all__ if callable(getattr(mlwatch, n)) and not getattr(mlwatch, n).__doc__]
    assert undocumented == []
