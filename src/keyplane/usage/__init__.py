"""Usage: one record per authenticated request, the stream that audit queries, quotas and the
anomaly rules read."""

from keyplane.usage.model import UsageEvent

__all__ = ["UsageEvent"]
