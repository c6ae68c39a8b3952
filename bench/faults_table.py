"""The README's fault table, generated from what `tests/e2e/test_faults.py` (or `make chaos`) wrote
under run/faults/: `python -m bench.faults_table`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ORDER = ("model server killed", "python worker killed", "broker stopped", "taskmanager killed")


def markdown(results: dict[str, dict]) -> str:
    lines = ["| fault | sent | answered | lost | duplicated | conflicting | longest time without an answer "
             "| default answers |", "|---|---|---|---|---|---|---|---|"]
    for name in ORDER:
        r = results.get(name)
        if r is None:
            continue
        gap = "-" if r.get("max_answer_gap_ms") is None else f"{r['max_answer_gap_ms'] / 1000:.1f} s"
        default = "-" if r.get("default_share") is None else f"{100 * r['default_share']:.1f} %"
        note = "" if r.get("recover_answers", True) else " (recovery scan off)"
        lines.append(f"| {name}{note} ({r['faults']}x, {r['rate']}/s for {r['duration_s']} s) | {r['sent']:,} | "
                     f"{r['answered']:,} | {r['lost']} | {r['duplicated']} | {r['conflicting']} | {gap} | {default} |")
    flood = results.get("malformed flood")
    if flood:
        lines += ["", f"Malformed flood: {flood['malformed']} malformed records among {flood['valid']} valid: "
                      f"{flood['answered']} answered, {flood['quarantined']} quarantined ({flood['reasons']}), "
                      f"{flood['restarts']} job restarts."]
    orphans = results.get("orphan flood")
    if orphans:
        lines += ["", f"Orphan flood: {orphans['scores']:,} scores for requests that never come: late scores "
                      f"{orphans['late']}; checkpointed rendezvous state peak {orphans['state_peak_bytes'] / 1e6:.1f} "
                      f"MB, after expiry {orphans['state_after_bytes'] / 1e6:.2f} MB."]
    return "\n".join(lines)


def load(directory: Path) -> dict[str, dict]:
    return {(r := json.loads(p.read_text()))["fault"]: r for p in sorted(directory.glob("*.json"))}


def main() -> None:
    directory = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("run/faults")
    results = load(directory)
    if not results:
        sys.exit(f"no fault results in {directory}: run `.venv/bin/python -m pytest -s tests/e2e/test_faults.py` "
                 "(or `make chaos`) first")
    print(markdown(results))


if __name__ == "__main__":
    main()
