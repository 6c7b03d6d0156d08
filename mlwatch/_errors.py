"""The exceptions mlwatch raises to its users."""

from __future__ import annotations

__all__ = ["ConfigError", "MlwatchError", "ProfileFormatError", "ProfileMergeError"]


class MlwatchError(Exception):
    """Base class of every error mlwatch raises on purpose."""


class ConfigError(MlwatchError, ValueError):
    """A configuration value is wrong; raised when configuring, never on the request path."""


class ProfileFormatError(MlwatchError, ValueError):
    """Bytes that claim to be a profile (or a sketch inside one) are malformed, corrupted or unsupported."""


class ProfileMergeError(MlwatchError, ValueError):
    """Two profiles cannot be merged (different models, incompatible sketch parameters)."""
