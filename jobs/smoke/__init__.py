"""A pass-through job used by the runtime smoke test and as the benchmark's baseline."""

from schemas._paths import LivePath

__path__ = LivePath(__name__, __path__)  # survives its directory (thread mode: schemas/_paths.py)
