"""Column types. Amounts are uint256 integers; SQLite's INTEGER stops at 2**63, so they are stored as
decimal text and always read back as Python ints (never floats)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Numeric, String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

__all__ = ["AmountSum", "Uint256", "install_sqlite_u256"]


class Uint256(TypeDecorator[int]):
    impl = String(78)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**256:
            raise ValueError(f"not a uint256: {value!r}")
        return str(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        return None if value is None else int(value)


class AmountSum(TypeDecorator[int]):
    """A sum of uint256 amounts, or a signed change to one: PostgreSQL's NUMERIC(78, 0) holds it
    exactly; on SQLite, whose INTEGER stops at 2**63 (and whose ``+`` then silently turns to a float),
    it is decimal text added with :func:`install_sqlite_u256`'s ``u256_add`` and ``u256_sum``."""

    impl = Numeric(78, 0)  # its operators: ``+`` adds (a String impl would render PostgreSQL's ||)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(Numeric(78, 0))
        return dialect.type_descriptor(String(80))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"not an integer amount: {value!r}")
        return value if dialect.name == "postgresql" else str(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        return None if value is None else int(value)


def _u256_add(a: Any, b: Any) -> str | None:
    if a is None or b is None:
        return None if a is None and b is None else str(int(a if b is None else b))
    return str(int(a) + int(b))


class _U256Sum:
    """``u256_sum(x)``: the exact sum of integers or decimal texts, as decimal text (NULL when none)."""

    def __init__(self) -> None:
        self.total: int | None = None

    def step(self, value: Any) -> None:
        if value is not None:
            self.total = int(value) + (self.total or 0)

    def finalize(self) -> str | None:
        return None if self.total is None else str(self.total)


def install_sqlite_u256(dbapi_connection: Any) -> None:
    """Register ``u256_add(a, b)`` and ``u256_sum(x)`` on a sqlite3 connection: exact arithmetic on
    amounts stored as decimal text, which SQLite's own ``+``/``SUM`` would clamp, overflow or round."""
    dbapi_connection.create_function("u256_add", 2, _u256_add, deterministic=True)
    dbapi_connection.create_aggregate("u256_sum", 1, _U256Sum)
