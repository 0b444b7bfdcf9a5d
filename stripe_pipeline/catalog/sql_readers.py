"""PostgreSQL twins of ``readers.py``: the same tolerant readers as SQL over JSONB.

Each reader returns an :class:`Expr`: the SQL ``value`` and an ``ok`` condition that
holds exactly when the SQL value is certainly what the Python reader returns. Where
``ok`` is false (a field of the wrong type, an odd number), the event is not
extracted in the database and goes through the Python handler, which returns the
same value or raises the shape error. So ``ok`` may be stricter than Python, never
looser: a row extracted in SQL always equals the row the Python handler builds.

Expressions read ``o`` (the event's ``data.object``, extracted once per row) and
``e.payload`` (the whole event); ``path`` arguments are JSONB expressions such as
``field("o", "customer")``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Expr:
    """A SQL value and the condition under which it equals the Python reader's result."""

    value: str
    ok: str = "true"


def field(base: str, *path: str) -> str:
    """``base -> 'a' -> 'b'``: NULL where a level is missing or not an object (``dig``)."""
    out = base
    for key in path:
        if "'" in key:
            raise ValueError(f"bad JSON key {key!r}")
        out = f"({out} -> '{key}')"
    return out


def _typeof(path: str) -> str:
    return f"jsonb_typeof({path})"


def _absent_or_null(path: str) -> str:
    return f"coalesce({_typeof(path)} = 'null', true)"


def text(path: str) -> Expr:
    """``readers.text``: a string or nothing."""
    return Expr(
        f"({path} #>> '{{}}')",
        f"coalesce({_typeof(path)} IN ('string', 'null'), true)",
    )


def ref_id(path: str) -> Expr:
    """``readers.ref_id``: an id string ("" is none) or an expanded object's id."""
    kind = _typeof(path)
    return Expr(
        f"(CASE {kind} WHEN 'string' THEN nullif({path} #>> '{{}}', '') "
        f"WHEN 'object' THEN ({path} ->> 'id') END)",
        f"(coalesce({kind} IN ('string', 'null'), true) OR ({kind} = 'object' AND "
        f"coalesce(jsonb_typeof({path} -> 'id') IN ('string', 'null'), true)))",
    )


def integer(path: str) -> Expr:
    """``readers.integer``: integral JSON numbers only (booleans are not integers).

    A number is taken when its stored numeric has no fractional digits (``5.0`` keeps
    its scale in JSONB and is left to Python, which reads a float) and fewer than 16
    digits (below 2**53: past it a JSON number may have been a float whose digits
    PostgreSQL and Python read differently). Measured: half the cost of matching the
    number's text against a regular expression, and these run for every row.
    """
    number = f"({path})::numeric"
    exact = f"(scale({number}) = 0 AND abs({number}) < 1e15)"
    return Expr(
        f"(CASE WHEN {_typeof(path)} = 'number' THEN "
        f"(CASE WHEN {exact} THEN ({path})::bigint END) END)",
        f"(CASE {_typeof(path)} WHEN 'number' THEN {exact} "
        f"WHEN 'null' THEN true ELSE {path} IS NULL END)",
    )


def required_integer(path: str) -> Expr:
    """``readers.required_integer``: as ``integer``, and missing is a shape error."""
    found = integer(path)
    return Expr(found.value, f"({found.ok} AND {found.value} IS NOT NULL)")


def amount(path: str) -> Expr:
    """``readers.amount``: as ``integer``; a negative amount is Python's to refuse."""
    found = integer(path)
    return Expr(found.value, f"({found.ok} AND coalesce({found.value} >= 0, true))")


def required_amount(path: str) -> Expr:
    """``readers.required_amount``."""
    found = amount(path)
    return Expr(found.value, f"({found.ok} AND {found.value} IS NOT NULL)")


def boolean(path: str) -> Expr:
    """``readers.boolean``."""
    return Expr(
        f"(CASE WHEN {_typeof(path)} = 'boolean' THEN ({path})::boolean END)",
        f"coalesce({_typeof(path)} IN ('boolean', 'null'), true)",
    )


def currency(path: str) -> Expr:
    """``readers.currency``: three ASCII letters, lower-cased (other letters: Python)."""
    return Expr(
        f"lower({path} #>> '{{}}')",
        f"({_absent_or_null(path)} OR ({_typeof(path)} = 'string' "
        f"AND ({path} #>> '{{}}') ~ '^[A-Za-z]{{3}}$'))",
    )


def constant(sql: str) -> Expr:
    """A literal or an expression that cannot fail (``'true'``, ``NULL::text``)."""
    return Expr(sql)


def object_id(base: str = "o") -> Expr:
    """``readers.object_id``: the object's own non-empty id string."""
    path = field(base, "id")
    return Expr(
        f"({path} #>> '{{}}')",
        f"({_typeof(path)} = 'string' AND ({path} #>> '{{}}') <> '')",
    )


def livemode() -> Expr:
    """``EventContext.livemode``: the object's flag, else the event's; booleans only."""
    obj, event = field("o", "livemode"), field("e.payload", "livemode")
    return Expr(
        f"(CASE WHEN o ? 'livemode' THEN {boolean(obj).value} IS TRUE "
        f"ELSE {boolean(event).value} IS TRUE END)",
        f"(CASE WHEN o ? 'livemode' THEN {boolean(obj).ok} ELSE {boolean(event).ok} END)",
    )


def either(first: Expr, second: Expr) -> Expr:
    """Python's ``first or second`` for strings: ``second`` only when ``first`` is empty.

    ``ok`` asks both readers to be sure (stricter than needed when ``first`` is set,
    which is allowed): repeating ``first`` there would double the SQL per level of a
    chain.
    """
    return Expr(
        f"coalesce(nullif({first.value}, ''), {second.value})",
        f"(({first.ok}) AND ({second.ok}))",
    )


def event_time() -> Expr:
    """``unix_time(ctx.created)``: the event's own ``created`` (a stored integer)."""
    return Expr("(CASE WHEN e.stripe_created <> 0 THEN to_timestamp(e.stripe_created) END)")


def all_ok(*exprs: Expr) -> str:
    """The conjunction of the readers' ``ok`` conditions."""
    parts = [x.ok for x in exprs if x.ok != "true"]
    return " AND ".join(f"({p})" for p in parts) if parts else "true"


# JSON values Python's ``bool()`` reads as false; ``IN`` compares numbers numerically,
# so ``0.0`` and ``-0`` are ``'0'``
_FALSY = "('null'::jsonb, 'false'::jsonb, '0'::jsonb, '\"\"'::jsonb, '[]'::jsonb, '{}'::jsonb)"


def json_truth(path: str) -> Expr:
    """Python's ``bool()`` of a JSON value (missing or null: false).

    Numbers other than zero are left to Python: it may read a tiny literal
    (``1e-400``) as ``0.0`` where PostgreSQL's numeric is not zero.
    """
    return Expr(
        f"NOT coalesce({path} IN {_FALSY}, true)",
        f"coalesce({_typeof(path)} <> 'number' OR {path} = '0'::jsonb, true)",
    )


def falsy_or(path: str, kind: str) -> str:
    """``(value or default)`` used as a ``kind``: sure when the value is missing, falsy
    or of that kind (a truthy value of another kind raises, a nonzero number: Python)."""
    return f"coalesce({_typeof(path)} = '{kind}' OR {path} IN {_FALSY}, true)"


def object_or_empty(path: str) -> Expr:
    """``value or {}`` read as an object: the object, or NULL; a truthy non-object raises."""
    return Expr(f"(CASE WHEN {_typeof(path)} = 'object' THEN {path} END)", falsy_or(path, "object"))


def only_if(condition: str, found: Expr) -> Expr:
    """``found if condition else None`` (``found`` read only where the condition holds)."""
    return Expr(
        f"(CASE WHEN {condition} THEN {found.value} END)",
        f"(CASE WHEN {condition} THEN {all_ok(found)} ELSE true END)",
    )


def list_data(path: str) -> Expr:
    """``readers.list_data``: a plain list, or a list object's data (falsy: empty; NULL
    here); anything else raises."""
    kind, data = _typeof(path), field(path, "data")
    return Expr(
        f"(CASE {kind} WHEN 'array' THEN {path} WHEN 'object' THEN "
        f"(CASE WHEN {_typeof(data)} = 'array' THEN {data} END) END)",
        f"(coalesce({kind} IN ('array', 'null'), true) "
        f"OR ({kind} = 'object' AND {falsy_or(data, 'array')}))",
    )


def json_or(*paths: str) -> Expr:
    """Python's ``a or b or ...`` of raw JSON values: the first truthy one, else the last."""
    *heads, last = paths
    whens = " ".join(f"WHEN {json_truth(p).value} THEN {p}" for p in heads)
    return Expr(f"(CASE {whens} ELSE {last} END)", all_ok(*(json_truth(p) for p in heads)))


def card_fingerprint_of(path: str) -> Expr:
    """``readers.card_fingerprint``: None unless an object, else the first truthy candidate."""
    is_object = f"({_typeof(path)} = 'object')"
    is_card = f"(({path} -> 'object') = '\"card\"'::jsonb)"
    chosen = json_or(
        field(path, "card", "fingerprint"),
        field(path, "payment_method_details", "card", "fingerprint"),
        field(path, "source", "fingerprint"),
        f"(CASE WHEN {is_card} THEN ({path} -> 'fingerprint') END)",
    )
    found = text(chosen.value)
    return only_if(is_object, Expr(found.value, all_ok(chosen, found)))


# Python's datetime spans years 1..9999; two days of margin keep any session time zone in it
_UNIX_MIN, _UNIX_MAX = -62_135_596_800 + 172_800, 253_402_300_799 - 172_800


def unix_time(path: str) -> Expr:
    """``readers.unix_time``: integral Unix seconds; 0 means "not set".

    ``to_timestamp`` is only reached for times Python can represent (years 1-9999):
    PostgreSQL raises past year 294276, which would fail the whole batch's query.
    Fractional times would round differently: Python decides those.
    """
    seconds = integer(path)
    in_range = f"({seconds.value} BETWEEN {_UNIX_MIN} AND {_UNIX_MAX})"
    return Expr(
        f"(CASE WHEN {seconds.value} <> 0 AND {in_range} THEN to_timestamp({seconds.value}) END)",
        f"({seconds.ok} AND coalesce({in_range}, true))",
    )
