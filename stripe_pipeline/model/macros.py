"""Cross-database macros: the few places where SQLite and PostgreSQL SQL differ.

Each macro takes SQL expressions as strings (as dbt macros do) and returns SQL for one
dialect, so a model is written once. Conventions that keep both backends equal:

* truncated dates are ISO-8601 text (``2026-01-31``, ``2026-01-31 14:00:00``), UTC;
* durations are seconds as a floating/numeric value;
* ratios and decimals are NUMERIC on PostgreSQL and REAL on SQLite (no integer division).
"""

from __future__ import annotations

from collections.abc import Callable

from stripe_pipeline.money import sql_amount_expression

DIALECTS = ("sqlite", "postgresql")

_TRUNC_FORMATS = {
    # part: (SQLite strftime format, PostgreSQL to_char format)
    "hour": ("%Y-%m-%d %H:00:00", "YYYY-MM-DD HH24:00:00"),
    "day": ("%Y-%m-%d", "YYYY-MM-DD"),
    "month": ("%Y-%m-01", "YYYY-MM-01"),
}


class Macros:
    """The macro functions of one dialect, exposed to model templates by name."""

    def __init__(self, dialect: str) -> None:
        if dialect not in DIALECTS:
            raise ValueError(f"unsupported dialect {dialect!r}; expected one of {DIALECTS}")
        self.dialect = dialect

    @property
    def pg(self) -> bool:
        return self.dialect == "postgresql"

    def functions(self) -> dict[str, Callable[..., str]]:
        return {
            "date_trunc": self.date_trunc,
            "epoch_to_date": self.epoch_to_date,
            "epoch_to_timestamp": self.epoch_to_timestamp,
            "seconds_between": self.seconds_between,
            "epoch_seconds": self.epoch_seconds,
            "now": self.now,
            "json_get": self.json_get,
            "json_each": self.json_each,
            "json_scalar": self.json_scalar,
            "json_array_length": self.json_array_length,
            "cast_numeric": self.cast_numeric,
            "safe_divide": self.safe_divide,
            "to_major": self.to_major,
            "percentile_window": self.percentile_window,
            "percentile_cont": self.percentile_cont,
        }

    # -- time ---------------------------------------------------------------------

    def date_trunc(self, part: str, column: str) -> str:
        """UTC ``hour`` / ``day`` / ``month`` of a timestamp, as ISO text."""
        sqlite_fmt, pg_fmt = _TRUNC_FORMATS[part]
        if self.pg:
            return f"to_char(({column}) AT TIME ZONE 'UTC', '{pg_fmt}')"
        return f"strftime('{sqlite_fmt}', {column})"

    def epoch_to_date(self, column: str) -> str:
        """UTC day (ISO text) of a Unix time in seconds, e.g. Stripe's ``created``."""
        if self.pg:
            return f"to_char(to_timestamp({column}) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
        return f"date({column}, 'unixepoch')"

    def epoch_to_timestamp(self, column: str) -> str:
        if self.pg:
            return f"to_timestamp({column})"
        return f"datetime({column}, 'unixepoch')"

    def seconds_between(self, start: str, end: str) -> str:
        """``end - start`` in seconds (fractional), NULL when either is NULL."""
        if self.pg:
            return f"EXTRACT(EPOCH FROM (({end}) - ({start})))"
        return f"((julianday({end}) - julianday({start})) * 86400.0)"

    def epoch_seconds(self, column: str) -> str:
        """Unix time (seconds) of a timestamp, to compare with Stripe's ``created``."""
        if self.pg:
            return f"EXTRACT(EPOCH FROM ({column}))"
        return f"((julianday({column}) - 2440587.5) * 86400.0)"

    def now(self) -> str:
        """The current UTC time (transaction time on PostgreSQL)."""
        if self.pg:
            return "CURRENT_TIMESTAMP"
        return "strftime('%Y-%m-%d %H:%M:%f', 'now')"

    # -- JSON ---------------------------------------------------------------------

    def json_get(self, column: str, *path: str | int) -> str:
        """A JSON member as text (``json_get('items', 0, 'currency')``)."""
        if not path:
            raise ValueError("json_get needs at least one key")
        if self.pg:
            steps = [str(p) if isinstance(p, int) else f"'{p}'" for p in path]
            head = "".join(f" -> {step}" for step in steps[:-1])
            return f"({column}{head} ->> {steps[-1]})"
        json_path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
        return f"json_extract({column}, '{json_path}')"

    def json_each(self, column: str, alias: str) -> str:
        """A FROM item with one row per element of a JSON array (``{alias}.value``).

        NULL or non-array values give no rows, so ``CROSS JOIN`` drops them.
        """
        if self.pg:
            return (
                f"jsonb_array_elements(CASE WHEN jsonb_typeof({column}) = 'array' "
                f"THEN {column} ELSE '[]'::jsonb END) AS {alias}(value)"
            )
        return (
            f"json_each(CASE WHEN json_type({column}) = 'array' "
            f"THEN {column} ELSE '[]' END) AS {alias}"
        )

    def json_scalar(self, column: str) -> str:
        """The text of a JSON string or number element (``json_each``'s ``value``)."""
        if self.pg:
            return f"({column} #>> '{{}}')"
        return f"CAST({column} AS TEXT)"

    def json_array_length(self, column: str) -> str:
        """Length of a JSON array; 0 for NULL or anything that is not an array."""
        if self.pg:
            return (
                f"(CASE WHEN jsonb_typeof({column}) = 'array' "
                f"THEN jsonb_array_length({column}) ELSE 0 END)"
            )
        return (
            f"(CASE WHEN json_type({column}) = 'array' THEN json_array_length({column}) ELSE 0 END)"
        )

    # -- numbers ------------------------------------------------------------------

    def cast_numeric(self, expression: str) -> str:
        """Exact NUMERIC on PostgreSQL; REAL on SQLite (which has no decimal type)."""
        return f"CAST({expression} AS {'NUMERIC' if self.pg else 'REAL'})"

    def safe_divide(self, numerator: str, denominator: str) -> str:
        """``numerator / denominator`` without integer division; NULL when dividing by 0."""
        return f"({self.cast_numeric(numerator)} / NULLIF({denominator}, 0))"

    def to_major(self, minor: str, currency: str) -> str:
        """Decimal amount of a minor-unit amount with the currency's exponent."""
        return sql_amount_expression(f"({minor})", currency)

    # -- percentiles --------------------------------------------------------------

    def percentile_window(self, value: str, partition_by: str) -> str:
        """Columns a ``percentile_cont`` in the enclosing GROUP BY needs (SQLite only).

        Put it in the select list of the subquery the percentile is aggregated over:
        SQLite has no ordered-set aggregates, so each row gets its rank among the
        non-NULL values of its group and the group's count of them.
        """
        if self.pg:
            return "NULL AS pct_rank_, NULL AS pct_count_"
        return (
            f"row_number() OVER (PARTITION BY {partition_by}, ({value}) IS NULL "
            f"ORDER BY {value}) AS pct_rank_, "
            f"count({value}) OVER (PARTITION BY {partition_by}) AS pct_count_"
        )

    def percentile_cont(self, fraction: float, value: str) -> str:
        """Continuous percentile (linear interpolation), as PostgreSQL's ``percentile_cont``.

        On SQLite it interpolates between the ranks from ``percentile_window``:
        position ``1 + p (n - 1)``, value ``v[lo] + (pos - lo) (v[lo + 1] - v[lo])``.
        """
        p = float(fraction)
        if not 0.0 <= p <= 1.0:
            raise ValueError("percentile fraction must be within [0, 1]")
        if self.pg:
            return f"percentile_cont({p}) WITHIN GROUP (ORDER BY {value})"
        pos = f"(1 + {p} * (pct_count_ - 1))"
        lo = f"CAST({pos} AS INTEGER)"
        at_lo = f"max(CASE WHEN pct_rank_ = {lo} AND ({value}) IS NOT NULL THEN {value} END)"
        at_hi = f"max(CASE WHEN pct_rank_ = {lo} + 1 AND ({value}) IS NOT NULL THEN {value} END)"
        frac = f"max({pos} - {lo})"
        return f"({at_lo} + COALESCE({frac} * ({at_hi} - {at_lo}), 0))"
