"""Findings of a run, spooled to a temporary file until the run commits them.

Why a file: a run writes nothing to the discrepancy tables until every listing has
succeeded (all-or-nothing), yet the number of findings is unbounded (a wiped local
table means N of them). Memory stays at one chunk whatever N is.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, fields
from itertools import islice
from typing import Any

KINDS = ("missing_locally", "missing_in_stripe", "deleted_in_stripe", "field_mismatch")


@dataclass(frozen=True, slots=True)
class Finding:
    """One difference; ``field`` is '' for a missing object."""

    object_type: str
    object_id: str
    kind: str
    field: str = ""
    local_value: Any = None
    remote_value: Any = None

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.object_type, self.object_id, self.kind, self.field)


@dataclass(frozen=True, slots=True)
class Repair:
    """An object to rebuild from its API state, as observed at ``observed_at``.

    ``read_as``: the event type whose parser reads ``obj``; ``source``: the listing it
    came from, ``fetch``, or ``deleted`` (Stripe answered 404 for a deletable row:
    ``obj`` is empty and the row is marked deleted).
    """

    object_type: str
    object_id: str
    read_as: str
    observed_at: int
    obj: dict[str, Any]
    source: str


@dataclass(frozen=True, slots=True)
class ObjectFindings:
    """Everything one listing found about one object, kept together so a chunk of the
    spool never separates an object's findings from its repair."""

    findings: list[Finding]
    repair: Repair | None = None


def _shallow(record: Finding | Repair) -> dict[str, Any]:
    """A record's fields as written (``asdict`` would deep-copy a repair's whole Stripe
    object only for it to be serialized)."""
    return {f.name: getattr(record, f.name) for f in fields(record)}


class Spool:
    """Append an object's findings while comparing; read them back in chunks.

    Also the objects a listing found equal to the stored rows (``confirm``): the run
    records that Stripe stated them at the observation time, so an older event that
    arrives afterwards (a late delivery, the run's own backfill) cannot replace the
    confirmed state by winning a tie of its second.
    """

    def __init__(self) -> None:
        # closed by close() / __exit__: the spool outlives any single with-block
        self._file = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115
        self._confirmed = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115
        self.findings = 0
        self.repairs = 0
        self.confirmed = 0
        self._taken = 0  # where the confirmations not taken yet begin

    def confirm(self, object_type: str, keys: list[str], observed_at: int) -> None:
        """Objects of one chunk that Stripe stated as stored, at ``observed_at``."""
        if keys:
            self._confirmed.write(json.dumps([object_type, observed_at, keys]) + "\n")
            self.confirmed += len(keys)

    def confirmations(self) -> Iterator[tuple[str, int, list[str]]]:
        """(object type, observed at, keys), chunk by chunk as confirmed: those not
        taken by an earlier call (a run writes them as it goes)."""
        self._confirmed.flush()
        self._confirmed.seek(self._taken)
        while line := self._confirmed.readline():
            self._taken = self._confirmed.tell()
            object_type, observed_at, keys = json.loads(line)
            yield object_type, observed_at, keys
        self._confirmed.seek(0, 2)

    def add(self, findings: list[Finding], repair: Repair | None = None) -> None:
        doc = {
            "f": [_shallow(f) for f in findings],
            "r": _shallow(repair) if repair is not None else None,
        }
        self._file.write(json.dumps(doc, default=str) + "\n")
        self.findings += len(findings)
        self.repairs += repair is not None

    def _records(self) -> Iterator[ObjectFindings]:
        self._file.flush()
        self._file.seek(0)
        for line in self._file:
            doc = json.loads(line)
            repair = Repair(**doc["r"]) if doc["r"] is not None else None
            yield ObjectFindings([Finding(**f) for f in doc["f"]], repair)
        self._file.seek(0, 2)

    def chunks(self, size: int = 2000) -> Iterator[list[ObjectFindings]]:
        records = self._records()
        while chunk := list(islice(records, size)):
            yield chunk

    def close(self) -> None:
        self._file.close()
        self._confirmed.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
