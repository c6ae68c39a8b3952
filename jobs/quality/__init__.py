"""The quality job: micro-batches of an input stream validated against an expectation suite (Great Expectations)."""

from schemas._paths import LivePath

__path__ = LivePath(__name__, __path__)  # survives its directory (thread mode: schemas/_paths.py)
