"""The detector: runs every rule on every usage event and counts flags by rule."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from keyplane.anomaly.history import NetworkHistory
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


def default_rules(
    responses: Mapping[str, Response] | None = None, *, history: NetworkHistory | None = None
) -> list[Rule]:
    """The four rules with their default thresholds; responses overrides by rule name
    (e.g. {"new_network": Response.SUSPEND}). The two network rules share one NetworkHistory
    (history, or a new one), which AnomalyDetector teaches and the guard keeps in the store.
    Raises ValueError for an unknown rule name."""
    shared = history if history is not None else NetworkHistory()
    rules: list[Rule] = [
        RateSpike(),
        NewNetwork(history=shared),
        SensitiveCallFromNewNetwork(history=shared),
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
    """Feeds events to rules; `flags` counts (rule, response) for metrics.

    histories: the NetworkHistory objects the rules share (not their private ones); after all
    rules saw an event, the detector adds it to each, so no rule sees an event's own network
    as already known.
    """

    def __init__(self, rules: Sequence[Rule] | None = None) -> None:
        self.rules = list(rules) if rules is not None else default_rules()
        self.flags: Counter[tuple[str, str]] = Counter()
        shared: dict[int, NetworkHistory] = {}
        for rule in self.rules:
            history = getattr(rule, "history", None)
            if isinstance(history, NetworkHistory) and not getattr(rule, "learns", True):
                shared[id(history)] = history
        self.histories = list(shared.values())

    def observe(self, event: UsageEvent) -> list[Flag]:
        """Every flag this event trips, most severe first."""
        found: list[Flag] = []
        for rule in self.rules:
            flag = rule.observe(event)
            if flag is not None:
                found.append(flag)
        self.counted(found)
        if event.authenticated and event.key_id is not None:
            for history in self.histories:
                network = history.network_of(event.client_ip)
                if network is not None:
                    history.add(event, network)
        if len(found) > 1:
            found.sort(key=_severity)
        return found

    def counted(self, flags: list[Flag]) -> list[Flag]:
        """flags, counted in `flags` by (rule, response) (for flags raised outside observe())."""
        for flag in flags:
            self.flags[(flag.rule, flag.response.value)] += 1
        return flags


#: flags sort most severe first.
_SEVERITY = {Response.SUSPEND: 0, Response.ALERT: 1, Response.RECORD: 2}


def _severity(flag: Flag) -> int:
    return _SEVERITY[flag.response]
