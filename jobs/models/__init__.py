"""A model job: one Flink job per model deployment (model id + version, from a model card)."""

from schemas._paths import LivePath

__path__ = LivePath(__name__, __path__)  # survives its directory (thread mode: schemas/_paths.py)
