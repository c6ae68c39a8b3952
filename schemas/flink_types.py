"""Flink row types and SQL columns derived from the wire records (schemas.records): the one definition
of each record stays its pydantic model. Scalars map to their Flink type; nested records, dicts and
lists are carried as JSON strings (as on the wire).

The streams' SQL tables have richer types (ROW, MAP, ARRAY): `schemas.tables`.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

from pydantic import BaseModel

SCALAR_SQL_TYPES = {str: "STRING", int: "BIGINT", float: "DOUBLE", bool: "BOOLEAN"}
"""The Flink SQL type of each scalar Python type (also the streams' SQL tables', `schemas.tables`)."""


def _scalar(annotation: Any) -> type | None:
    """The scalar Python type of a field (unwrapping Optional and Literal), or None for JSON-carried ones."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _scalar(args[0]) if len(args) == 1 else None
    if origin is Literal:
        values = typing.get_args(annotation)
        return type(values[0]) if values and all(type(v) is type(values[0]) for v in values) else None
    return annotation if annotation in SCALAR_SQL_TYPES else None


def sql_columns(model: type[BaseModel]) -> list[tuple[str, str]]:
    """(column, SQL type) per field of the record, in field order."""
    return [(name, SCALAR_SQL_TYPES.get(_scalar(f.annotation), "STRING")) for name, f in model.model_fields.items()]


def row_type(model: type[BaseModel]):
    """The record as a named Flink row type (pyflink.common.Types)."""
    from pyflink.common import Types

    flink = {"STRING": Types.STRING(), "BIGINT": Types.LONG(), "DOUBLE": Types.DOUBLE(), "BOOLEAN": Types.BOOLEAN()}
    cols = sql_columns(model)
    return Types.ROW_NAMED([c for c, _ in cols], [flink[t] for _, t in cols])
