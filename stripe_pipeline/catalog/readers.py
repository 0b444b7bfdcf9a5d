"""Tolerant readers for Stripe payload fields, across API versions.

Stripe gives nested objects as ids or as expanded objects, drops optional fields,
and moves fields between versions. These readers turn a missing optional field into
``None``; a field of the wrong type is a payload shape error (``TypeError`` /
``ValueError``), which the applier reports as a permanent failure of that event.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def ref_id(value: Any) -> str | None:
    """Id of a reference given as an id string or as an expanded object."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        found = value.get("id")
        if found is None or isinstance(found, str):
            return found
    raise TypeError(f"expected an id or an object with an id, got {type(value).__name__}")


def dig(obj: Any, *path: str) -> Any:
    """``obj[path[0]][path[1]]...``, or ``None`` where a level is missing or not an object."""
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def unix_time(value: Any) -> datetime | None:
    """Timezone-aware UTC datetime of a Unix time; ``None`` and ``0`` mean "not set"."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a Unix time, got {value!r}")
    if value == 0:
        return None
    return datetime.fromtimestamp(value, UTC)


# a BIGINT column holds what Stripe sends; anything past it is a broken payload, refused
# here as a shape error (permanent) instead of failing the database write (retried)
_INT64 = 2**63 - 1


def integer(value: Any) -> int | None:
    """An integer field (amounts are integers of minor units in every API version)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"expected an integer, got {value!r}")
    if isinstance(value, float):
        if not value.is_integer():
            raise TypeError(f"expected an integer, got {value!r}")
        value = int(value)
    if not isinstance(value, int):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    if not -_INT64 <= value <= _INT64:
        raise ValueError("integer out of the 64-bit range")
    return value


def required_integer(obj: dict[str, Any], key: str) -> int:
    value = integer(obj.get(key))
    if value is None:
        raise ValueError(f"{obj.get('object', 'object')} has no {key}")
    return value


def amount(value: Any) -> int | None:
    """An amount Stripe never sends negative (charged, refunded, disputed, due)."""
    found = integer(value)
    if found is not None and found < 0:
        raise ValueError(f"negative amount {found}")
    return found


def required_amount(obj: dict[str, Any], key: str) -> int:
    found = amount(obj.get(key))
    if found is None:
        raise ValueError(f"{obj.get('object', 'object')} has no {key}")
    return found


def number(value: Any) -> float | None:
    """A JSON number that may have a fraction (a tax rate's percentage, ``8.875``; a
    coupon's ``percent_off``), as Python reads it."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    try:
        found = float(value)
    except OverflowError:
        raise ValueError("number out of range") from None
    if found != found or found in (float("inf"), float("-inf")):
        raise ValueError("not a finite number")
    return found


def boolean(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise TypeError(f"expected a boolean, got {value!r}")


def livemode(obj: dict[str, Any], event: dict[str, Any] | None = None) -> bool:
    """The object's ``livemode``, else the event's; a JSON boolean or absent (test mode).

    Strict on purpose: ``"false"`` is truthy in Python, so a string would be stored as
    live money while the event row says test mode.
    """
    if "livemode" in obj:
        return boolean(obj["livemode"]) is True
    if isinstance(event, dict):
        return boolean(event.get("livemode")) is True
    return False


def currency(value: Any) -> str | None:
    """Lower-case ISO 4217 code; anything else is a shape error."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 3 or not (value.isascii() and value.isalpha()):
        raise ValueError(f"not a currency code: {value!r}")
    return value.lower()


def required_currency(obj: dict[str, Any]) -> str:
    """The object's currency: money without one cannot be stored or summed."""
    found = currency(obj.get("currency"))
    if found is None:
        raise ValueError(f"{obj.get('object', 'object')} without a currency")
    return found


def text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"expected a string, got {type(value).__name__}")


def list_data(value: Any) -> list[Any]:
    """Items of a Stripe list object (``{"object": "list", "data": [...]}``) or a plain list."""
    if value is None:
        return []
    if isinstance(value, dict):
        value = value.get("data") or []
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return value


def object_or_empty(obj: dict[str, Any], key: str) -> dict[str, Any]:
    """``obj[key] or {}`` as an object (a nested object Stripe may leave out or null)."""
    found = obj.get(key) or {}
    if not isinstance(found, dict):
        raise TypeError(f"expected an object at {key}, got {type(found).__name__}")
    return found


def object_id(obj: dict[str, Any]) -> str:
    """The object's own id: without it nothing can be stored."""
    found = obj.get("id")
    if not isinstance(found, str) or not found:
        raise ValueError(f"{obj.get('object', 'object')} without an id")
    return found


def card_fingerprint(payment_method_or_charge: Any) -> str | None:
    """Card fingerprint of an expanded payment method, charge, or legacy card source."""
    if not isinstance(payment_method_or_charge, dict):
        return None
    return text(
        dig(payment_method_or_charge, "card", "fingerprint")
        or dig(payment_method_or_charge, "payment_method_details", "card", "fingerprint")
        or dig(payment_method_or_charge, "source", "fingerprint")
        or (
            payment_method_or_charge.get("fingerprint")
            if payment_method_or_charge.get("object") == "card"
            else None
        )
    )


def deleted_stub(obj: dict[str, Any]) -> bool:
    """A ``{"id", "object", "deleted": true}`` answer: it says only that the object is
    gone (Stripe's answer for a deleted customer, coupon or product fetched by id)."""
    return obj.get("deleted") is True and not (set(obj) - {"id", "object", "deleted"})
