"""Usage: one record per authenticated request, the stream that audit queries, quotas and the
anomaly rules read.

The batching writer (bounded queue, spill file, replay) is keyplane.usage.writer; it is not
imported here because it imports the store, which imports this package's model.
"""

from keyplane.usage.model import KeyNetwork, UsageBy, UsageEvent, UsageFields, UsageSummaryRow

__all__ = ["KeyNetwork", "UsageBy", "UsageEvent", "UsageFields", "UsageSummaryRow"]
