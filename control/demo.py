"""The demo behind `make demo`."""

from __future__ import annotations

from control import runtime


def run(progress=print) -> None:
    runtime.up(progress=progress)
    progress("The data plane (models, rendezvous, load) is coming soon; the runtime is up.")
    progress("Stop it with `.venv/bin/rendezvous down`.")
