"""Package paths that survive the deletion of the directory a package was first imported from.

A thread-mode Flink job runs in the TaskManager's one long-lived CPython. Each job's Python files are
unpacked into a directory of its own, put on `sys.path`, and deleted when the job ends; but the
interpreter keeps the packages imported from there (`jobs`, `jobs.rendezvous`, ...) with a `__path__`
naming that deleted directory. A later job that needs a module nobody imported yet (e.g. the rendezvous's
recovery scan on its first restore) then fails with `No module named ...`, though its own copy is on
`sys.path`. Each package of the code shipped to the cluster (`jobs`, `schemas`, `model_udfs` and their
subpackages) sets `__path__ = LivePath(__name__, __path__)`: its directories as imported while they exist,
else the same package's directory in the first `sys.path` entry (or import hook) that has it now.
On the embedded cluster each thread-mode job has TaskManagers of its own (`control.runtime.pinned`), so the
copies found are that job's own; where thread-mode jobs share a TaskManager (a cluster named by
RENDEZVOUS_FLINK_ADDRESS), the first job's code is what every later one runs.
"""

from __future__ import annotations

import os
import sys
from typing import Iterable, Iterator


class LivePath:
    """A package's `__path__` (iterable, like importlib's namespace paths) that follows live directories."""

    def __init__(self, name: str, initial: Iterable[str]):
        self._name = name
        self._initial = list(initial)

    def _live(self) -> list[str]:
        live = [p for p in self._initial if os.path.isdir(p)]
        if live:
            return live
        top, *rest = self._name.split(".")
        for entry in sys.path:
            candidate = os.path.join(entry, top, *rest)
            if os.path.isfile(os.path.join(candidate, "__init__.py")):
                return [candidate]
        for finder in sys.meta_path:  # e.g. an editable install's finder
            try:
                spec = finder.find_spec(top, None)
            except Exception:  # noqa: BLE001 - a finder that cannot answer is skipped
                continue
            for loc in (spec.submodule_search_locations or []) if spec else []:
                candidate = os.path.join(loc, *rest)
                if os.path.isfile(os.path.join(candidate, "__init__.py")):
                    return [candidate]
        return self._initial

    def __iter__(self) -> Iterator[str]:
        return iter(self._live())

    def __len__(self) -> int:
        return len(self._live())

    def __getitem__(self, i):
        return self._live()[i]

    def __contains__(self, item) -> bool:
        return item in self._live()

    def __repr__(self) -> str:
        return f"LivePath({self._name!r}, {self._live()!r})"
