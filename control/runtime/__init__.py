"""The embedded runtime (one machine): supervisors of the Kafka broker, the Flink session cluster and
model servers. `up`, `down` and `status` are the facade; see `embedded`. `metrics_endpoints`: where the
Flink processes serve their Prometheus metrics (`metrics`)."""

from control.runtime.embedded import (
    Component,
    check_prerequisites,
    down,
    processes_alive,
    set_taskmanagers,
    status,
    up,
)
from control.runtime.metrics import endpoints as metrics_endpoints

__all__ = ["Component", "check_prerequisites", "down", "metrics_endpoints", "processes_alive", "set_taskmanagers",
           "status", "up"]
