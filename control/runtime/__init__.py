"""The embedded runtime (one machine): supervisors of the Kafka broker, the Flink session cluster and
model servers. `up`, `down` and `status` are the facade; see `embedded`."""

from control.runtime.embedded import (
    Component,
    check_prerequisites,
    down,
    processes_alive,
    set_taskmanagers,
    status,
    up,
)

__all__ = ["Component", "check_prerequisites", "down", "processes_alive", "set_taskmanagers", "status", "up"]
