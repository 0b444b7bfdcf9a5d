"""Blanking personal data, as pure functions over plain values (no database here).

Two techniques, both driven by ``personal.py``:

- by place: a personal column, or a personal path of a Stripe object, becomes
  ``None`` (JSON null). Keys stay, so shapes stay what parsers expect;
- by value: strings known to identify the person (their email, name, phone, street)
  are replaced wherever else they are quoted (an error message in a ticket, metadata,
  a description), as ``[redacted]``. Strings shaped like Stripe ids are never touched.

Inputs are never mutated; a changed value is a new object.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from types import MappingProxyType
from typing import Any

from stripe_pipeline.audit import AuditEntry
from stripe_pipeline.privacy.personal import (
    JSON_REDACTED_COLUMNS,
    PAYLOAD_PATHS,
    PERSONAL_COLUMNS,
    QUOTED_KEYS,
    personal_audit_fields,
)

REDACTED = "[redacted]"
# details key of an audit row that names the personal fields a change touched
CHANGED_KEY = "personal_fields_changed"
# top-level key of a raw payload that erasure rewrote
ERASED_MARKER = "erased"

# cus_NffrFeUfNV2Hib, pi_3MtwBw..., cs_test_a1B2...: never a person's words
_STRIPE_ID = re.compile(r"^[a-z]+(?:_[a-z]+)?_(?=[A-Za-z0-9]*[A-Z0-9])[A-Za-z0-9]+$")


@cache
def _audit_fields() -> Mapping[str, frozenset[str]]:
    return MappingProxyType({k: frozenset(v) for k, v in personal_audit_fields().items()})


# ---- audit ------------------------------------------------------------------------


def redact_audit_values(
    object_type: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    details: dict[str, Any] | None,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, Any] | None]:
    """Before/after without personal values: a set value becomes ``[redacted]``, a
    missing one stays ``None``, and ``details`` names the personal fields that changed."""
    fields = _audit_fields().get(object_type)
    if not fields:
        return before, after, details
    old, new = before or {}, after or {}
    present = [f for f in sorted(fields) if f in old or f in new]
    if not present:
        return before, after, details
    changed = [f for f in present if old.get(f) != new.get(f)]

    def mask(values: dict[str, Any] | None) -> dict[str, Any] | None:
        if values is None:
            return None
        return {k: (REDACTED if k in fields and v is not None else v) for k, v in values.items()}

    if changed:
        earlier = (details or {}).get(CHANGED_KEY) or []
        details = {**(details or {}), CHANGED_KEY: sorted({*earlier, *changed})}
    return mask(before), mask(after), details


def redact_audit_entry(entry: AuditEntry) -> AuditEntry:
    """The audit entry as it may be stored: personal fields named, never copied."""
    if entry.object_type not in _audit_fields():
        return entry
    before, after, details = redact_audit_values(
        entry.object_type, entry.before, entry.after, entry.details
    )
    if before is entry.before and after is entry.after and details is entry.details:
        return entry
    return replace(entry, before=before, after=after, details=details)


# ---- rows ---------------------------------------------------------------------------


def redact_fields(document: Any, fields: Iterable[str]) -> Any:
    """A JSON object with the given keys (where present and set) blanked."""
    if not isinstance(document, dict):
        return document
    blank = [f for f in fields if document.get(f) is not None]
    if not blank:
        return document
    return {**document, **dict.fromkeys(blank)}


def blank_personal(table: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """The row's personal columns blanked (JSON columns: only their personal keys)."""
    out = dict(row)
    for column in PERSONAL_COLUMNS.get(table, ()):
        if column not in out:
            continue
        inner = JSON_REDACTED_COLUMNS.get((table, column))
        out[column] = redact_fields(out[column], inner) if inner is not None else None
    return out


# ---- raw payloads -------------------------------------------------------------------


@cache
def _parsed_paths(object_type: str) -> tuple[tuple[tuple[str, ...], bool], ...]:
    parsed = []
    for path in PAYLOAD_PATHS.get(object_type, ()):
        text_only = path.endswith(":text")
        parsed.append((tuple(path.removesuffix(":text").split(".")), text_only))
    return tuple(parsed)


def _walk_path(node: Any, keys: tuple[str, ...], visit) -> None:
    """Call ``visit(parent, key)`` at the end of a path (``key[]`` walks list items)."""
    if not isinstance(node, dict) or not keys:
        return
    head, rest = keys[0], keys[1:]
    name = head.removesuffix("[]")
    if name not in node:
        return
    if not rest:
        visit(node, name)
        return
    child = node[name]
    if head.endswith("[]"):
        for item in child if isinstance(child, list) else ():
            _walk_path(item, rest, visit)
    else:
        _walk_path(child, rest, visit)


def _quoted_strings(value: Any, key: str, out: set[str]) -> None:
    """Strings under identifying keys, inside a personal value (an address, billing details)."""
    if isinstance(value, str):
        if key in QUOTED_KEYS:
            out.add(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            _quoted_strings(v, str(k), out)
    elif isinstance(value, list):
        for v in value:
            _quoted_strings(v, key, out)


def _object_type(obj: Any) -> str | None:
    kind = obj.get("object") if isinstance(obj, dict) else None
    return kind if isinstance(kind, str) else None


def quoted_in_object(obj: Any, object_type: str | None = None) -> set[str]:
    """The identifying strings at the personal paths of one Stripe object."""
    found: set[str] = set()
    kind = object_type or _object_type(obj)
    for keys, _ in _parsed_paths(kind or ""):
        _walk_path(obj, keys, lambda parent, name: _quoted_strings(parent[name], name, found))
    return found


def quoted_in_payload(payload: Any) -> set[str]:
    """Identifying strings of an event payload (its object and previous attributes)."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, dict):
        return set()
    kind = _object_type(data.get("object"))
    found = quoted_in_object(data.get("object"), kind)
    found |= quoted_in_object(data.get("previous_attributes"), kind)
    return found


def _blank_in_place(obj: Any, object_type: str | None) -> int:
    blanked = 0
    for keys, text_only in _parsed_paths(object_type or ""):

        def visit(parent: dict[str, Any], name: str, text_only: bool = text_only) -> None:
            nonlocal blanked
            value = parent[name]
            if value is None or (text_only and not isinstance(value, str)):
                return
            parent[name] = None
            blanked += 1

        _walk_path(obj, keys, visit)
    return blanked


@dataclass(frozen=True)
class Quoted:
    """Identifying strings of one person, replaced wherever a string quotes them."""

    values: frozenset[str]
    _pattern: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_pattern", _pattern(self.values))

    @classmethod
    def of(cls, values: Iterable[str | None]) -> Quoted:
        kept = set()
        for value in values:
            if not isinstance(value, str):
                continue
            value = value.strip()
            # short or digit-only strings would match unrelated text (a postcode in a date)
            has_letter = any(c.isalpha() for c in value)
            if len(value) >= 4 and (has_letter or len(value) >= 7) and not _is_id(value):
                kept.add(value)
        return cls(frozenset(kept))

    def __or__(self, other: Quoted) -> Quoted:
        return Quoted(self.values | other.values)

    def in_text(self, text: str) -> str:
        pattern = self._pattern
        if pattern is None or _is_id(text):
            return text
        return pattern.sub(REDACTED, text)

    def in_value(self, value: Any) -> Any:
        """The value (a string or a JSON document) with every quote replaced."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.in_text(value)
        if isinstance(value, dict):
            return {k: self.in_value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.in_value(v) for v in value]
        return value


def _pattern(values: frozenset[str]) -> re.Pattern[str] | None:
    if not values:
        return None
    ordered = sorted(values, key=len, reverse=True)  # longest first: "Jenny Rosen" before "Jenny"
    return re.compile("|".join(re.escape(v) for v in ordered), re.IGNORECASE)


def _is_id(text: str) -> bool:
    return bool(_STRIPE_ID.match(text))


def redact_payload(payload: dict[str, Any], quoted: Quoted) -> tuple[dict[str, Any], int]:
    """An event payload with its personal paths blanked and quotes replaced.

    Returns the new payload and how many personal paths were blanked. Ids, amounts,
    statuses and dates stay; the payload is marked ``erased``.
    """
    doc = copy.deepcopy(payload)
    data = doc.get("data")
    blanked = 0
    if isinstance(data, dict):
        kind = _object_type(data.get("object"))
        blanked += _blank_in_place(data.get("object"), kind)
        blanked += _blank_in_place(data.get("previous_attributes"), kind)
    doc = quoted.in_value(doc)
    doc[ERASED_MARKER] = True
    return doc, blanked
