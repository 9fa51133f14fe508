"""The detector: runs every rule on every usage event and counts flags by rule."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from keyplane.anomaly.rules import (
    FailedSignatureBurst,
    Flag,
    NewNetwork,
    RateSpike,
    Response,
    Rule,
    SensitiveCallFromNewNetwork,
)
from keyplane.usage.model import UsageEvent

__all__ = ["AnomalyDetector", "default_rules"]


def default_rules(responses: Mapping[str, Response] | None = None) -> list[Rule]:
    """The four rules with their default thresholds; responses overrides by rule name
    (e.g. {"new_network": Response.SUSPEND}). Raises ValueError for an unknown rule name."""
    rules: list[Rule] = [
        RateSpike(),
        NewNetwork(),
        SensitiveCallFromNewNetwork(),
        FailedSignatureBurst(),
    ]
    names = {rule.name for rule in rules}
    for name, response in (responses or {}).items():
        if name not in names:
            raise ValueError(f"unknown anomaly rule {name!r}; known: {sorted(names)}")
        for rule in rules:
            if rule.name == name:
                rule.response = response
    return rules


class AnomalyDetector:
    """Feeds events to rules; `flags` counts (rule, response) for metrics."""

    def __init__(self, rules: Sequence[Rule] | None = None) -> None:
        self.rules = list(rules) if rules is not None else default_rules()
        self.flags: Counter[tuple[str, str]] = Counter()

    def observe(self, event: UsageEvent) -> list[Flag]:
        """Every flag this event trips, most severe first."""
        found = [flag for rule in self.rules if (flag := rule.observe(event)) is not None]
        for flag in found:
            self.flags[(flag.rule, flag.response.value)] += 1
        order = {Response.SUSPEND: 0, Response.ALERT: 1, Response.RECORD: 2}
        return sorted(found, key=lambda f: order[f.response])
