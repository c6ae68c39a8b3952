"""Headless Chromium for the report's test: load an HTML file, run its scripts, and read back the DOM as
drawn (`--dump-dom`), then find what each plot drew. No Chromium is a failure that says how to get it,
never a skip: the report's promise is that a browser draws it."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def chromium() -> str:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("headless Chromium is needed to check that the report draws: `make build/.chromium` as root "
                "installs it (`apt-get install -y chromium`; `make test` does that first), or install it yourself: "
                "`sudo apt-get install chromium`")


def dump_dom(path: Path, budget_ms: int = 20_000, timeout_s: float = 180.0) -> str:
    """The DOM of file `path` after its scripts ran (virtual time: Chromium waits for the page's work
    instead of a wall-clock sleep)."""
    with tempfile.TemporaryDirectory(prefix="rdv-chromium-") as profile:
        res = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
                              "--dump-dom", path.resolve().as_uri()],
                             capture_output=True, text=True, timeout=timeout_s)
    assert res.returncode == 0 and res.stdout.strip(), f"chromium failed ({res.returncode}): {res.stderr[-2000:]}"
    return res.stdout


@dataclass
class Drawn:
    """What one plot div holds after drawing."""

    classes: dict[str, int] = field(default_factory=dict)
    legend: list[str] = field(default_factory=list)
    shapes: int = 0
    """paths drawn in a shape layer (our vertical event markers)"""

    def count(self, cls: str) -> int:
        return self.classes.get(cls, 0)


class _Plots(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.plots: dict[str, Drawn] = {}
        self.no_data: dict[str, str] = {}
        self._stack: list[list[str]] = []  # class lists of the open elements inside the current plot div
        self._plot: str | None = None
        self._text_into: str | None = None  # "legend" or "nodata:<id>"

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if self._plot is None:
            if tag == "div" and (a.get("id") or "").startswith("plot-"):
                self._plot = a["id"][len("plot-"):]
                self.plots[self._plot] = Drawn()
                self._stack = [classes]
            elif tag == "p" and "no-data" in classes and a.get("id"):
                self._text_into = f"nodata:{a['id'][len('nodata-'):]}"
                self.no_data[self._text_into[7:]] = ""
            return
        drawn = self.plots[self._plot]
        for c in classes:
            drawn.classes[c] = drawn.classes.get(c, 0) + 1
        if tag == "path" and any("shapelayer" in cs for cs in self._stack):
            drawn.shapes += 1
        if "legendtext" in classes:
            self._text_into = "legend"
            drawn.legend.append("")
        if tag not in VOID:
            self._stack.append(classes)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if self._plot is not None and tag not in VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag):
        if self._text_into == "legend" or (self._text_into and tag == "p"):
            self._text_into = None  # a legend's <text> and a no-data <p> hold only text
        if self._plot is None:
            return
        self._stack.pop()
        if not self._stack:
            self._plot = None

    def handle_data(self, data):
        if self._text_into == "legend" and self._plot is not None:
            self.plots[self._plot].legend[-1] += data
        elif self._text_into and self._text_into.startswith("nodata:"):
            self.no_data[self._text_into[7:]] += data


def drawn_plots(dom: str) -> tuple[dict[str, Drawn], dict[str, str]]:
    """({plot name: what its div `plot-NAME` drew}, {section name: its `no data` sentence})."""
    p = _Plots()
    p.feed(dom)
    p.close()
    return p.plots, p.no_data
