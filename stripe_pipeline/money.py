"""Money: integer minor units plus an ISO currency are the truth; decimals are derived.

Stripe sends amounts as integers in the currency's smallest unit. The exponent
differs by currency (JPY 0, USD 2, KWD 3), so a decimal amount is only ever derived
with ``Decimal`` scaling, never through floats.
"""

from __future__ import annotations

from decimal import Decimal

# https://docs.stripe.com/currencies#zero-decimal
ZERO_DECIMAL_CURRENCIES = frozenset(
    [
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    ]
)
# https://docs.stripe.com/currencies#three-decimal
THREE_DECIMAL_CURRENCIES = frozenset(["bhd", "jod", "kwd", "omr", "tnd"])


def currency_exponent(currency: str) -> int:
    code = currency.lower()
    if code in ZERO_DECIMAL_CURRENCIES:
        return 0
    if code in THREE_DECIMAL_CURRENCIES:
        return 3
    return 2


def to_decimal(amount_minor: int, currency: str) -> Decimal:
    """Major-unit decimal of a minor-unit integer, exact for every exponent."""
    return Decimal(int(amount_minor)).scaleb(-currency_exponent(currency))


def sql_amount_expression(minor_column: str, currency_column: str) -> str:
    """SQL for the derived decimal amount: exact NUMERIC on PostgreSQL.

    SQLite has no decimal type, so there the same expression yields a REAL; the
    integer ``*_minor`` column stays the source of truth on both.
    """
    zero = ", ".join(f"'{c}'" for c in sorted(ZERO_DECIMAL_CURRENCIES))
    three = ", ".join(f"'{c}'" for c in sorted(THREE_DECIMAL_CURRENCIES))
    return (
        f"CASE WHEN lower({currency_column}) IN ({zero}) THEN {minor_column} * 1.0 "
        f"WHEN lower({currency_column}) IN ({three}) THEN {minor_column} / 1000.0 "
        f"ELSE {minor_column} / 100.0 END"
    )
