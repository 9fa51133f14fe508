"""Anomaly detection: per-key rules over the usage stream, each with a graded response
(record, alert, suspend)."""

from keyplane.anomaly.detector import AnomalyDetector, default_rules
from keyplane.anomaly.rules import (
    SENSITIVE_PATHS,
    FailedSignatureBurst,
    Flag,
    NewNetwork,
    RateSpike,
    Response,
    Rule,
    SensitiveCallFromNewNetwork,
    network_of,
)

__all__ = [
    "SENSITIVE_PATHS",
    "AnomalyDetector",
    "FailedSignatureBurst",
    "Flag",
    "NewNetwork",
    "RateSpike",
    "Response",
    "Rule",
    "SensitiveCallFromNewNetwork",
    "default_rules",
    "network_of",
]
