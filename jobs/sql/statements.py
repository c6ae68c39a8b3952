"""Splitting a SQL script into statements, and the script's `${kafka}` placeholder (pure, no PyFlink)."""

from __future__ import annotations

import re

KAFKA_PLACEHOLDER = "${kafka}"
"""In a SQL file, stands for the Kafka connection's connector options (`'properties.bootstrap.servers' = ...`
and the client properties, e.g. on a secured broker), so a sink table's `WITH (...)` can name its topic only."""

_SET = re.compile(r"^\s*SET\s+'((?:[^']|'')*)'\s*=\s*'((?:[^']|'')*)'\s*$", re.IGNORECASE | re.DOTALL)


def split_statements(script: str) -> list[str]:
    """The statements of a script separated by `;`, outside '...' strings, `...` identifiers, "..." and
    comments (`-- ...`, `/* ... */`). Empty statements and comment-only ones are dropped."""
    out: list[str] = []
    buf: list[str] = []
    i, n = 0, len(script)
    while i < n:
        c = script[i]
        if c in "'`\"":
            j = i + 1
            while j < n:
                if script[j] == c:
                    if j + 1 < n and script[j + 1] == c:  # doubled quote: escaped
                        j += 2
                        continue
                    break
                j += 1
            buf.append(script[i:j + 1])
            i = j + 1
        elif script.startswith("--", i):
            j = script.find("\n", i)
            i = n if j < 0 else j
        elif script.startswith("/*", i) and not script.startswith("/*+", i):  # keep hints
            j = script.find("*/", i + 2)
            i = n if j < 0 else j + 2
            buf.append(" ")
        elif c == ";":
            out.append("".join(buf))
            buf = []
            i += 1
        else:
            buf.append(c)
            i += 1
    out.append("".join(buf))
    return [s.strip() for s in out if s.strip()]


def set_option(statement: str) -> tuple[str, str] | None:
    """(key, value) of a `SET 'key' = 'value'` statement, else None."""
    m = _SET.match(statement)
    return (m.group(1).replace("''", "'"), m.group(2).replace("''", "'")) if m else None


def is_insert(statement: str) -> bool:
    return re.match(r"^\s*INSERT\b", statement, re.IGNORECASE) is not None


def expand_kafka(script: str, options: dict[str, str]) -> str:
    """The script with `${kafka}` replaced by `options` as `'key' = 'value'` pairs, comma-separated."""
    from schemas.tables import literal

    return script.replace(KAFKA_PLACEHOLDER, ", ".join(f"{literal(k)} = {literal(v)}" for k, v in options.items()))
