"""keyplane: a self-hosted API-key control plane that speaks the Bybit V5 wire protocol."""

__version__ = "0.1.0"

__all__ = ["__version__"]
