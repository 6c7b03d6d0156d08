"""mlwatch: watch ML models where they run.

Every observation is folded into mergeable sketches (Apache DataSketches); profiles merge across
replicas and windows, and drift and quality are computed from them without keeping raw rows.
"""

from __future__ import annotations

import os

from mlwatch._errors import ConfigError, MlwatchError, ProfileFormatError, ProfileMergeError
from mlwatch._wire import FORMAT_VERSION, WireLimits
from mlwatch.alerts import Alert, AlertRule, Alerts, FreshnessRule
from mlwatch.column import ColumnProfile
from mlwatch.config import Exporter, Settings
from mlwatch.drift import ColumnDrift, DriftReport, drift
from mlwatch.fairness import FairnessReport, fairness
from mlwatch.lifecycle import configure, flush, health, shutdown
from mlwatch.local_export import LocalFileExporter
from mlwatch.model_quality import ModelQuality, QualitySketch
from mlwatch.monitoring import Observation, monitor, observe
from mlwatch.otlp import OtlpExporter
from mlwatch.outcomes import (
    current_prediction_id,
    log_metric,
    log_outcome,
    log_ranking_outcome,
    prediction_token,
    quality,
)
from mlwatch.profile import Profile, merge
from mlwatch.profiling import ProfileConfig, profile
from mlwatch.quality_checks import Constraint, QualityIssue, QualityReport, check_quality

__version__ = "0.1.0"


def load(path: str | os.PathLike[str]) -> Profile:
    """Read a profile file written by `Profile.save` (or by the local exporter)."""
    return Profile.load(path)


__all__ = [
    "Alert",
    "AlertRule",
    "Alerts",
    "ColumnDrift",
    "ColumnProfile",
    "ConfigError",
    "Constraint",
    "DriftReport",
    "Exporter",
    "FORMAT_VERSION",
    "FairnessReport",
    "FreshnessRule",
    "LocalFileExporter",
    "MlwatchError",
    "ModelQuality",
    "Observation",
    "OtlpExporter",
    "Profile",
    "ProfileConfig",
    "ProfileFormatError",
    "ProfileMergeError",
    "QualityIssue",
    "QualityReport",
    "QualitySketch",
    "Settings",
    "WireLimits",
    "__version__",
    "check_quality",
    "configure",
    "current_prediction_id",
    "drift",
    "fairness",
    "flush",
    "health",
    "load",
    "log_metric",
    "log_outcome",
    "log_ranking_outcome",
    "merge",
    "monitor",
    "observe",
    "prediction_token",
    "profile",
    "quality",
    "shutdown",
]
