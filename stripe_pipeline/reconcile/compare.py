"""Object-level reconciliation: API listings against the local tables, with pandas.

Memory stays bounded for any N: API pages are streamed into chunks (10,000 objects
by default); each chunk is compared with the local rows of those ids only, and its
ids are staged in a temporary table. Local rows the API never listed are found
afterwards by an anti-join against that table over the window, read in chunks too.

A local row changed by an event newer than the chunk's observation time is skipped:
the API answer is older than what we already know, so it is not a discrepancy.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any

import pandas as pd
from sqlalchemy import (
    Connection,
    and_,
    column,
    exists,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy import table as sql_table

from stripe_pipeline.db.lists import IN_CHUNK, chunked, in_list
from stripe_pipeline.reconcile.api import ListingApi, list_window
from stripe_pipeline.reconcile.specs import (
    DATETIME_FIELDS,
    NOT_STALENESS,
    Listing,
    ObjectSpec,
    Projection,
)
from stripe_pipeline.reconcile.spool import Finding, Repair, Spool
from stripe_pipeline.reconcile.window import Window, to_unix

log = logging.getLogger(__name__)

CHUNK = 10_000
SEEN = "reconciliation_seen"


@dataclass(slots=True)
class CompareStats:
    listed: Counter = field(default_factory=Counter)  # resource -> objects listed
    compared: Counter = field(default_factory=Counter)  # object type -> objects compared
    skipped_newer_locally: int = 0
    unparseable: Counter = field(default_factory=Counter)  # resource -> objects
    found: Counter = field(default_factory=Counter)  # kind -> findings
    repairable_objects: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "listed": dict(self.listed),
            "compared": dict(self.compared),
            "skipped_newer_locally": self.skipped_newer_locally,
            "unparseable": dict(self.unparseable),
            "found": dict(self.found),
            "repairable_objects": self.repairable_objects,
        }


def create_seen_table(conn: Connection) -> None:
    """A per-connection temporary table of the ids the API listed in this run."""
    conn.execute(text(f"DROP TABLE IF EXISTS {SEEN}"))
    conn.execute(
        text(
            f"CREATE TEMPORARY TABLE {SEEN} (object_type VARCHAR(64) NOT NULL, "
            "object_id VARCHAR(255) NOT NULL, PRIMARY KEY (object_type, object_id))"
        )
    )


def drop_seen_table(conn: Connection) -> None:
    conn.execute(text(f"DROP TABLE IF EXISTS {SEEN}"))


def _stage_seen(conn: Connection, object_type: str, keys: list[str]) -> None:
    if not keys:
        return
    if conn.dialect.name == "postgresql":  # one statement per chunk
        conn.execute(
            text(
                f"INSERT INTO {SEEN} SELECT :t, k FROM unnest(CAST(:keys AS text[])) AS k "
                "ON CONFLICT DO NOTHING"
            ),
            {"t": object_type, "keys": keys},
        )
    else:  # SQLite runs in-process: executemany is as good as it gets
        conn.execute(
            text(f"INSERT INTO {SEEN} VALUES (:t, :k) ON CONFLICT DO NOTHING"),
            [{"t": object_type, "k": k} for k in keys],
        )


def analyze_seen(conn: Connection) -> None:
    """Give PostgreSQL's planner the staged row count: temporary tables are never
    auto-analyzed, and without statistics the anti-join may become a nested loop."""
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"ANALYZE {SEEN}"))


def seen_ids(conn: Connection, object_type: str, ids: list[str]) -> set[str]:
    """Which of these ids the API listed in this run (for resolving old discrepancies)."""
    seen = sql_table(SEEN, column("object_type"), column("object_id"))
    found: set[str] = set()
    for part in chunked(ids):
        stmt = select(seen.c.object_id).where(
            seen.c.object_type == object_type, in_list(conn, seen.c.object_id, part)
        )
        found.update(conn.execute(stmt).scalars())
    return found


def _normalize_local(column: str, value: Any) -> Any:
    if value is None:
        return None
    if column in DATETIME_FIELDS and isinstance(value, datetime):
        return to_unix(value)
    if column == "currency" and isinstance(value, str):
        return value.lower()
    return value


def _local_rows(conn: Connection, spec: ObjectSpec, keys: list[str]) -> pd.DataFrame:
    table = spec.table
    columns = [table.c[spec.key], *(table.c[f] for f in spec.fields), table.c.last_event_created]
    records: list[dict[str, Any]] = []
    for part in chunked(keys, 10_000 if conn.dialect.name == "postgresql" else IN_CHUNK):
        for row in conn.execute(select(*columns).where(in_list(conn, table.c[spec.key], part))):
            m = row._mapping
            rec = {f: _normalize_local(f, m[f]) for f in spec.fields}
            rec["_key"] = m[spec.key]
            rec["_version"] = m["last_event_created"]
            records.append(rec)
    frame = pd.DataFrame.from_records(records, columns=["_key", "_version", *spec.fields]).astype(
        object
    )
    return frame.set_index("_key")


def _chunks(iterable: Iterator[dict[str, Any]], size: int) -> Iterator[tuple[int, list[dict]]]:
    """Chunks of API objects, each with the time its first page was requested."""
    while True:
        observed_at = int(time.time())
        chunk = list(islice(iterable, size))
        if not chunk:
            return
        yield observed_at, chunk


def _remote_frame(spec: ObjectSpec, projections: list[Projection]) -> pd.DataFrame:
    """Remote values (object dtype keeps None and ints as they are) and, per field,
    whether the API object carried it at all."""
    data: dict[str, list[Any]] = {"_key": [p.key for p in projections]}
    for f in spec.fields:
        data[f] = [p.values.get(f) for p in projections]
        data[f"_has_{f}"] = [f in p.values for p in projections]
    data["_owns"] = [p.owns_object for p in projections]
    return pd.DataFrame(data).astype(object).set_index("_key")


def compare_chunk(
    conn: Connection,
    spec: ObjectSpec,
    listing: Listing,
    objects: list[dict[str, Any]],
    observed_at: int,
    spool: Spool,
    stats: CompareStats,
) -> None:
    """Compare one chunk of API objects with the local rows of the same ids."""
    projected: dict[str, tuple[Projection, dict[str, Any]]] = {}
    for obj in objects:
        try:
            p = listing.project(obj)
        except (LookupError, TypeError, ValueError) as exc:
            # processing would dead-letter the same payload; a ticket there says why
            stats.unparseable[listing.resource] += 1
            log.warning("%s %s not comparable: %s", listing.resource, obj.get("id"), exc)
            continue
        if p is not None and p.key not in projected:  # newest first: keep the first
            projected[p.key] = (p, obj)
    if not projected:
        return
    keys = list(projected)
    _stage_seen(conn, spec.object_type, keys)
    stats.compared[spec.object_type] += len(keys)

    remote = _remote_frame(spec, [p for p, _ in projected.values()])
    local = _local_rows(conn, spec, keys)
    merged = pd.merge(
        remote, local, how="left", left_index=True, right_index=True, suffixes=("", "_local")
    )
    in_local = merged.index.isin(local.index)

    findings: dict[str, list[Finding]] = {}
    owns = merged["_owns"].astype(bool).to_numpy()
    for key in merged.index[~in_local & owns]:
        findings.setdefault(key, []).append(
            Finding(spec.object_type, key, "missing_locally", "", None, projected[key][0].values)
        )
    for key in merged.index[~in_local & ~owns]:
        # the owner's listing (earlier in the run) reported the object missing; this
        # listing's facts (a charge's refunds) complete the repaired row after it
        spool.add(
            [], Repair(spec.object_type, key, listing.resource, observed_at, projected[key][1])
        )

    version = pd.to_numeric(merged["_version"], errors="coerce")
    newer_locally = in_local & (version > observed_at).to_numpy()
    stats.skipped_newer_locally += int(newer_locally.sum())
    comparable = in_local & ~newer_locally
    for f in spec.fields:
        r, loc = merged[f], merged[f"{f}_local"]
        equal = (r == loc).fillna(False).astype(bool) | (r.isna() & loc.isna())
        differs = comparable & merged[f"_has_{f}"].astype(bool).to_numpy() & ~equal.to_numpy()
        for key, lv, rv in zip(merged.index[differs], loc[differs], r[differs], strict=True):
            findings.setdefault(key, []).append(
                Finding(spec.object_type, key, "field_mismatch", f, _plain(lv), _plain(rv))
            )

    for key, items in findings.items():
        for item in items:
            stats.found[item.kind] += 1
        repair = None
        if all(i.field not in NOT_STALENESS for i in items):
            stats.repairable_objects += 1
            repair = Repair(spec.object_type, key, listing.resource, observed_at, projected[key][1])
        spool.add(items, repair)


def _plain(value: Any) -> Any:
    """JSON-friendly scalars (pandas may hand back NaN for a missing value)."""
    if value is None:
        return None
    if isinstance(value, float):
        if value != value:
            return None
        if value.is_integer():
            return int(value)
    if hasattr(value, "item"):
        return value.item()
    return value


def find_missing_in_stripe(
    conn: Connection,
    spec: ObjectSpec,
    window: Window,
    spool: Spool,
    stats: CompareStats,
    *,
    chunk_size: int = CHUNK,
) -> None:
    """Local rows created in the window that no listing returned (anti-join, chunked)."""
    table = spec.table
    if window.start is None:  # full run: every row, also those without a created time
        in_window = or_(table.c.stripe_created <= window.end, table.c.stripe_created.is_(None))
    else:
        in_window = table.c.stripe_created.between(window.start, window.end)
    seen_table = sql_table(SEEN, column("object_type"), column("object_id"))
    analyze_seen(conn)
    not_seen = ~exists(
        select(literal_column("1"))
        .select_from(seen_table)
        .where(
            and_(
                seen_table.c.object_type == spec.object_type,
                seen_table.c.object_id == table.c[spec.key],
            )
        )
    )
    stmt = select(table.c[spec.key], *(table.c[f] for f in spec.fields)).where(in_window, not_seen)
    # on the statement, not the connection: Connection.execution_options sticks
    result = conn.execute(stmt.execution_options(yield_per=chunk_size))
    for part in result.partitions():
        frame = pd.DataFrame(part, columns=[spec.key, *spec.fields])
        for rec in frame.astype(object).to_dict("records"):
            local = {f: _plain(_normalize_local(f, rec[f])) for f in spec.fields}
            spool.add(
                [Finding(spec.object_type, rec[spec.key], "missing_in_stripe", "", local, None)]
            )
            stats.found["missing_in_stripe"] += 1


def compare_objects(
    conn: Connection,
    api: ListingApi,
    spec: ObjectSpec,
    window: Window,
    spool: Spool,
    stats: CompareStats,
    *,
    server_filter: bool = True,
    chunk_size: int = CHUNK,
) -> None:
    """Every listing of one object type, then the local rows no listing returned."""
    for listing in spec.listings:
        objects = list_window(
            api, listing.resource, window.start, window.end, server_filter=server_filter
        )
        counted = _counting(objects, stats, listing.resource)
        for observed_at, chunk in _chunks(counted, chunk_size):
            compare_chunk(conn, spec, listing, chunk, observed_at, spool, stats)
            conn.commit()  # release read snapshots; the temp table survives commits
    find_missing_in_stripe(conn, spec, window, spool, stats, chunk_size=chunk_size)
    conn.commit()


def _counting(items: Iterator[dict[str, Any]], stats: CompareStats, resource: str):
    for item in items:
        stats.listed[resource] += 1
        yield item
