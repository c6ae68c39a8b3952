"""SQL over the streams: the tables' catalog in a TableEnvironment, and the continuous SQL job
(`rendezvous sql -f FILE.sql`)."""

from schemas._paths import LivePath

__path__ = LivePath(__name__, __path__)  # survives its directory (thread mode: schemas/_paths.py)
