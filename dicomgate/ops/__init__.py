"""Operations: Prometheus metrics and the health/readiness/status HTTP endpoint."""

from dicomgate.ops.metrics import Metrics
from dicomgate.ops.server import OpsServer

__all__ = ["Metrics", "OpsServer"]
