"""The rendezvous job: one answer per request, chosen by the active schedule, on time."""

from schemas._paths import LivePath

__path__ = LivePath(__name__, __path__)  # survives its directory (thread mode: schemas/_paths.py)
