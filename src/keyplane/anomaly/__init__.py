"""Anomaly detection: per-key rules over the usage stream, each with a graded response
(record, alert, suspend), and the guard that carries those responses out."""

from keyplane.anomaly.detector import AnomalyDetector, default_rules
from keyplane.anomaly.guard import (
    FLAG_ACTION,
    AnomalyGuard,
    GuardStats,
    notifiers_from_settings,
    parse_responses,
)
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
    "FLAG_ACTION",
    "SENSITIVE_PATHS",
    "AnomalyDetector",
    "AnomalyGuard",
    "FailedSignatureBurst",
    "Flag",
    "GuardStats",
    "NewNetwork",
    "RateSpike",
    "Response",
    "Rule",
    "SensitiveCallFromNewNetwork",
    "default_rules",
    "network_of",
    "notifiers_from_settings",
    "parse_responses",
]
