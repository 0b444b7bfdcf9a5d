"""Tax rates (``stripe_tax_rates``): the rates tax amounts on invoices and credit
notes name, with the country, state and jurisdiction a tax is reported under.

https://docs.stripe.com/api/tax_rates/object

``tax_rate.created`` / ``tax_rate.updated``. A rate is never deleted, only archived
(``active: false``); its percentage and inclusiveness never change once created.
Stripe Tax creates rates of its own (``txr_...``) that invoices name the same way.
"""

from __future__ import annotations

from collections.abc import Iterable

from stripe_pipeline.catalog.model import (
    Column,
    EventContext,
    Fetch,
    Listing,
    Policy,
    Resource,
    Route,
    RowWrite,
)
from stripe_pipeline.catalog.readers import boolean, integer, number, object_id, text
from stripe_pipeline.db.models import StripeTaxRate

N, K = Policy.NEWEST, Policy.NEWEST_KNOWN
TABLE = StripeTaxRate.__tablename__

COLUMNS = (
    Column("display_name", N, audit=True),
    Column("description", N),
    Column("percentage", N, audit=True),
    Column("inclusive", N, audit=True),
    Column("active", N, audit=True),
    Column("country", N, audit=True),
    Column("state", N),
    Column("jurisdiction", N, audit=True),
    Column("jurisdiction_level", N),
    Column("tax_type", N),
    Column("stripe_created", K),
    Column("livemode", N),
)


def apply_tax_rate_event(ctx: EventContext) -> Iterable[RowWrite]:
    """created, updated."""
    rate = ctx.obj
    values = {
        "display_name": text(rate.get("display_name")),
        "description": text(rate.get("description")),
        "percentage": number(rate.get("percentage")),
        "inclusive": boolean(rate.get("inclusive")),
        "active": boolean(rate.get("active")),
        "country": text(rate.get("country")),
        "state": text(rate.get("state")),
        "jurisdiction": text(rate.get("jurisdiction")),
        "jurisdiction_level": text(rate.get("jurisdiction_level")),
        "tax_type": text(rate.get("tax_type")),
        "stripe_created": integer(rate.get("created")),
        "livemode": ctx.livemode,
    }
    return [RowWrite(TABLE, object_id(rate), values)]


RESOURCE = Resource(
    object_type="tax_rate",
    table=StripeTaxRate.__table__,
    key="stripe_tax_rate_id",
    columns=COLUMNS,
    # no SQL twin: a rate changes a few times a year, a twin would never pay off
    routes=(Route(("tax_rate.*",), apply_tax_rate_event, frozenset({"tax_rate"})),),
    listings=(Listing("tax_rates", "/v1/tax_rates", read_as="tax_rate.updated"),),
    fetch=(Fetch("/v1/tax_rates/{id}", "tax_rate.updated"),),
    docs="https://docs.stripe.com/api/tax_rates/object",
)
