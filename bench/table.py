"""The README's benchmark tables, generated from run/bench/latest.json (`python -m bench`) and, when it
exists, run/bench/stages.json (`python -m bench.stages`): `python -m bench.table`."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _f(v, fmt="{:.0f}"):
    return "-" if v is None else fmt.format(v)


def markdown(r: dict) -> str:
    lines = [f"Measured {r['at']} by `make bench` on this 2-core machine (medians of {r['runs']} runs; latency runs "
             f"of {r['duration_s']:.0f} s; capacity: backlogs of {r['backlog']} requests). Baseline (bare PyFlink "
             f"pass-through, same job configuration): {_f(r['baseline_capacity_per_s'])} records/s.",
             "",
             "| model set | offered | answers/s | unanswered | default answers | client latency p50 / p99 "
             "| overshoot p99 | CPU per request | capacity | capacity ratio |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, st in r["sets"].items():
        for rate, x in st["rates"].items():
            lines.append(
                f"| {name} | {rate}/s | {_f(x['answers_per_s'])} | {_f(x['unanswered'])} | "
                f"{_f(100 * x['default_share'] if x['default_share'] is not None else None, '{:.1f} %')} | "
                f"{_f(x['latency_p50_ms'])} / {_f(x['latency_p99_ms'])} ms (last deadline {x['last_deadline_ms']} ms) | "
                f"{_f(x['overshoot_p99_ms'])} ms | {_f(x['cpu_ms_per_request'], '{:.2f}')} ms | "
                f"{_f(st.get('capacity_per_s'))}/s | {_f(st.get('capacity_ratio'), '{:.3f}')} |")
    return "\n".join(lines)


def paths_markdown(r: dict) -> str:
    """Client-observed latency by the way the load went in (`--paths`): the requests topic, or a gateway."""
    lines = [f"Client-observed latency by path (`python -m bench --paths {' '.join(r.get('paths', []))}`, "
             f"{r['runs']} runs of {r['duration_s']:.0f} s per path and rate, alternating; medians, and each run's):",
             "",
             "| model set | offered | path | p50 | p99 | p50 of each run | p99 of each run | unanswered | default answers "
             "| CPU per request |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, st in r["sets"].items():
        for path, rates in (st.get("paths") or {}).items():
            for rate, x in rates.items():
                runs50 = ", ".join(_f(v, "{:.1f}") for v in x.get("latency_p50_runs_ms", []))
                runs99 = ", ".join(_f(v, "{:.1f}") for v in x.get("latency_p99_runs_ms", []))
                lines.append(
                    f"| {name} | {rate}/s | {path} | {_f(x['latency_p50_ms'], '{:.1f}')} ms | "
                    f"{_f(x['latency_p99_ms'], '{:.1f}')} ms | {runs50} | {runs99} | {_f(x['unanswered'])} | "
                    f"{_f(100 * x['default_share'] if x['default_share'] is not None else None, '{:.1f} %')} | "
                    f"{_f(x['cpu_ms_per_request'], '{:.2f}')} ms |")
    return "\n".join(lines)


CPU_COLUMNS = ("taskmanager jvm", "python workers", "kafka", "mlserver", "jobmanager", "load generator")


def cpu_markdown(r: dict) -> str:
    """ms of CPU per answered request by process (the model jobs' Python workers summed)."""
    lines = ["CPU per answered request, by process (ms; `cpu_ms_per_request_by_process`, one run of each row's runs):",
             "",
             "| model set | offered | " + " | ".join(CPU_COLUMNS) + " | total |",
             "|---|---|" + "---|" * (len(CPU_COLUMNS) + 1)]
    for name, st in r["sets"].items():
        for rate, x in st["rates"].items():
            by = x.get("cpu_ms_per_request_by_process") or {}
            cols = dict.fromkeys(CPU_COLUMNS, 0.0)
            for k, v in by.items():
                if k.startswith("python worker"):
                    cols["python workers"] += v
                elif k in cols:
                    cols[k] += v
            lines.append(f"| {name} | {rate}/s | " + " | ".join(f"{cols[c]:.2f}" for c in CPU_COLUMNS)
                         + f" | {_f(by.get('total'), '{:.2f}')} |")
    return "\n".join(lines)


def stages_markdown(r: dict) -> str:
    lines = [f"Each job alone, draining a backlog of {r['n']} requests' worth of its input "
             f"(`python -m bench.stages`, median of {r['runs']} runs):",
             "",
             "| job alone | requests/s |",
             "|---|---|"]
    for stage, rate in r["requests_per_s"].items():
        lines.append(f"| {stage} | {_f(rate)} |")
    return "\n".join(lines)


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("run/bench/latest.json")
    result = json.loads(path.read_text())
    print(markdown(result))
    print("")
    print(cpu_markdown(result))
    stages = path.parent / "stages.json"
    if stages.exists():
        print("")
        print(stages_markdown(json.loads(stages.read_text())))


if __name__ == "__main__":
    main()
