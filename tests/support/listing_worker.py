"""A separate process for the listing and shared-rate-limit tests.

``python -m tests.support.listing_worker <mode> '<json args>'``; the last stdout line
is JSON. Modes:

- ``list``: a resumable listing (``SlicedLister`` with ``DatabaseListingProgress``)
  that records every object it receives in ``listed_objects`` and the listing's
  progress in the same transaction, page by page (so a kill -9 anywhere loses or
  repeats nothing).
- ``backfill``: list resources through a limiter shared via the database, as fast as
  it lets us; prints how many objects of each listing were seen.
- ``recover``: ``pay_invoice`` calls in the priority lane through the same limiter.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from typing import Any

from sqlalchemy import text

from stripe_pipeline.db.engine import make_engine
from stripe_pipeline.stripe_api.client import StripeApi
from stripe_pipeline.stripe_api.listing import (
    DatabaseListingProgress,
    ListingRequest,
    SlicedLister,
)
from stripe_pipeline.stripe_api.ratelimit import RateLimiter

API_KEY = "sk_live_listing_worker"  # never sent anywhere but the fake on 127.0.0.1


def _api(args: dict[str, Any], engine: Any) -> StripeApi:
    limiter = RateLimiter.shared(
        engine,
        API_KEY,
        account_rate=args["account_rate"],
        endpoint_rate=args["endpoint_rate"],
    )
    return StripeApi(API_KEY, api_base=args["api_base"], limiter=limiter)


def _requests(args: dict[str, Any]) -> list[ListingRequest]:
    return [
        ListingRequest.resource(name, args["start"], args["end"], params=params)
        for name, params in args["resources"].items()
    ]


def list_resumable(args: dict[str, Any]) -> dict[str, Any]:
    engine = make_engine(args["database_url"])
    api = _api(args, engine)
    lister = SlicedLister(
        api.list_page,
        workers=args.get("workers", 3),
        max_slices_per_listing=args.get("max_slices", 4),
        progress=DatabaseListingProgress(engine),
        run_key=args["run_key"],
    )
    insert = text("INSERT INTO listed_objects (listing, object_id) VALUES (:listing, :id)")
    for page in lister.pages(_requests(args)):
        with engine.begin() as conn:
            if page.objects:
                conn.execute(insert, [{"listing": page.key, "id": o["id"]} for o in page.objects])
            lister.checkpoint(conn)  # this page's progress commits with its objects
    return lister.stats.as_dict()


def backfill(args: dict[str, Any]) -> dict[str, Any]:
    engine = make_engine(args["database_url"])
    api = _api(args, engine)
    lister = SlicedLister(api.list_page, workers=args.get("workers", 16))
    seen: Counter[str] = Counter()
    started = time.time()
    for key, _obj in lister.list_many(_requests(args)):
        seen[key] += 1
    return {
        "seen": dict(seen),
        "started": started,
        "finished": time.time(),
        "stats": lister.stats.as_dict(),
        "limiter": api.limiter.stats.__dict__,
    }


def recover(args: dict[str, Any]) -> dict[str, Any]:
    engine = make_engine(args["database_url"])
    api = _api(args, engine)
    calls = []
    for n in range(args["payments"]):
        asked = time.time()
        answer = api.pay_invoice(f"in_recover{n:04d}", idempotency_key=f"recover-{n}")
        calls.append({"asked": asked, "answered": time.time(), "status": answer["status"]})
        time.sleep(args.get("pause", 0.2))
    return {"calls": calls}


def main() -> None:
    mode, raw = sys.argv[1], sys.argv[2]
    handler = {"list": list_resumable, "backfill": backfill, "recover": recover}[mode]
    print(json.dumps(handler(json.loads(raw))), flush=True)


if __name__ == "__main__":
    main()
