"""Stripe billing, tax, checkout and fraud objects for tests, in today's (basil) and
older API shapes.

Today's objects start from Stripe's own fixtures (``tests/data/fixtures3.json``) with
their placeholder values (``"reason": "reason"``, ``subtotal: 2060319484``, both
``parent`` details filled in) replaced by realistic, consistent ones. Older shapes are
written out as those API versions sent them (2019-2024: ``price``/``plan`` on a line,
``tax_amounts``, ``total_tax_amounts``, a credit note's ``refund``, a checkout session
without ``status``).
"""

from __future__ import annotations

import copy
from typing import Any

CA_SALES_TAX = "txr_ca_sales"  # 7.25 %, exclusive, US / CA
DE_VAT = "txr_de_vat"  # 19 %, inclusive, DE


def _from(fx: dict[str, Any], kind: str, **values: Any) -> dict[str, Any]:
    found = copy.deepcopy(fx[kind])
    found.update(values)
    return found


def listed(items: list[dict[str, Any]], url: str, has_more: bool = False) -> dict[str, Any]:
    return {"object": "list", "data": items, "has_more": has_more, "url": url}


def tax_rate(fx: dict[str, Any], rate_id: str = CA_SALES_TAX, **values: Any) -> dict[str, Any]:
    base = {
        CA_SALES_TAX: {
            "display_name": "Sales Tax",
            "description": "California sales tax",
            "percentage": 7.25,
            "effective_percentage": 7.25,
            "inclusive": False,
            "country": "US",
            "state": "CA",
            "jurisdiction": "US - CA",
            "jurisdiction_level": "state",
            "tax_type": "sales_tax",
        },
        DE_VAT: {
            "display_name": "VAT",
            "description": "VAT Germany",
            "percentage": 19.0,
            "effective_percentage": 19.0,
            "inclusive": True,
            "country": "DE",
            "state": None,
            "jurisdiction": "DE",
            "jurisdiction_level": "country",
            "tax_type": "vat",
        },
    }.get(rate_id, {})
    return _from(
        fx,
        "tax_rate",
        id=rate_id,
        active=True,
        flat_amount=None,
        rate_type="percentage",
        created=values.pop("created", 1_700_000_000),
        **{**base, **values},
    )


def tax_basil(amount: int, taxable: int, rate: str = CA_SALES_TAX) -> dict[str, Any]:
    inclusive = rate == DE_VAT
    return {
        "amount": amount,
        "tax_behavior": "inclusive" if inclusive else "exclusive",
        "tax_rate_details": {"tax_rate": rate},
        "taxability_reason": "standard_rated",
        "taxable_amount": taxable,
        "type": "tax_rate_details",
    }


def tax_2024(amount: int, taxable: int, rate: Any = CA_SALES_TAX) -> dict[str, Any]:
    rate_id = rate["id"] if isinstance(rate, dict) else rate
    return {
        "amount": amount,
        "inclusive": rate_id == DE_VAT,
        "tax_rate": rate,
        "taxability_reason": "standard_rated",
        "taxable_amount": taxable,
    }


def line_basil(
    fx: dict[str, Any],
    line_id: str,
    invoice_id: str,
    *,
    amount: int,
    subscription: str | None = "sub_b1",
    item: str | None = "si_b1",
    invoice_item: str | None = None,
    price: str = "price_pro_monthly",
    product: str = "prod_pro",
    discount: int = 0,
    taxes: list[dict[str, Any]] | None = None,
    period: tuple[int, int] = (1_772_323_200, 1_775_001_600),
    proration: bool = False,
    quantity: int = 1,
) -> dict[str, Any]:
    """A line of today's shape: ``parent`` names its subscription item or invoice item."""
    if invoice_item is not None:
        parent = {
            "type": "invoice_item_details",
            "invoice_item_details": {
                "invoice_item": invoice_item,
                "proration": proration,
                "proration_details": {"credited_items": None},
                "subscription": subscription,
            },
        }
    else:
        parent = {
            "type": "subscription_item_details",
            "subscription_item_details": {
                "invoice_item": None,
                "proration": proration,
                "proration_details": {"credited_items": None},
                "subscription": subscription,
                "subscription_item": item,
            },
        }
    return _from(
        fx,
        "line_item",
        id=line_id,
        invoice=invoice_id,
        amount=amount,
        currency="usd",
        description="Pro plan" if invoice_item is None else "Setup fee",
        discount_amounts=[{"amount": discount, "discount": "di_b1"}] if discount else [],
        discounts=["di_b1"] if discount else [],
        period={"start": period[0], "end": period[1]},
        quantity=quantity,
        subscription=subscription,
        parent=parent,
        pricing={
            "type": "price_details",
            "price_details": {"price": price, "product": product},
            "unit_amount_decimal": str(amount // max(quantity, 1)),
        },
        subtotal=amount,
        taxes=taxes or [],
        pretax_credit_amounts=[],
    )


def line_2024(
    line_id: str,
    *,
    amount: int,
    kind: str = "subscription",
    subscription: str | None = "sub_old",
    item: str | None = "si_old",
    invoice_item: str | None = None,
    price: str = "price_basic",
    product: str = "prod_basic",
    discount: int | None = 0,
    tax_amounts: list[dict[str, Any]] | None = None,
    period: tuple[int, int] = (1_706_745_600, 1_709_251_200),
    proration: bool = False,
    invoice: str | None = None,
) -> dict[str, Any]:
    """A line as API versions 2019-12-03 to 2024 sent it (``discount`` None: before
    discount amounts, 2020-08-27). ``invoice`` only since 2022-08-01."""
    line: dict[str, Any] = {
        "id": line_id,
        "object": "line_item",
        "amount": amount,
        "amount_excluding_tax": amount,
        "currency": "eur",
        "description": "1 x Basic (at €20.00 / month)",
        "discountable": True,
        "invoice_item": invoice_item,
        "livemode": False,
        "metadata": {},
        "period": {"start": period[0], "end": period[1]},
        "plan": {"id": price, "object": "plan", "amount": amount, "product": product},
        "price": {
            "id": price,
            "object": "price",
            "product": product,
            "unit_amount": amount,
            "currency": "eur",
        },
        "proration": proration,
        "quantity": 1,
        "subscription": subscription,
        "subscription_item": item,
        "tax_amounts": tax_amounts or [],
        "tax_rates": [],
        "type": kind,
    }
    if discount is not None:
        line["discount_amounts"] = [{"amount": discount, "discount": "di_old"}] if discount else []
    if invoice is not None:
        line["invoice"] = invoice
    return line


def invoice_basil(
    fx: dict[str, Any],
    invoice_id: str,
    lines: list[dict[str, Any]],
    *,
    customer: str = "cus_b1",
    subscription: str | None = "sub_b1",
    status: str = "paid",
    created: int = 1_772_323_200,
    paid_at: int | None = None,
    has_more: bool = False,
    payment_intent: str | None = None,
    total_taxes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An invoice of today's shape whose totals add up from ``lines`` (all of them,
    even when only a first page is embedded)."""
    subtotal = sum(line["amount"] for line in lines)
    discount = sum(d["amount"] for line in lines for d in line.get("discount_amounts") or [])
    taxes = total_taxes
    if taxes is None:
        taxes = [t for line in lines for t in line.get("taxes") or []]
    exclusive = sum(t["amount"] for t in taxes if t["tax_behavior"] == "exclusive")
    total = subtotal - discount + exclusive
    paid = status == "paid"
    embedded = lines[:1] if has_more else lines
    return _from(
        fx,
        "invoice",
        id=invoice_id,
        customer=customer,
        status=status,
        billing_reason="subscription_cycle" if subscription else "manual",
        currency="usd",
        created=created,
        amount_due=total,
        amount_paid=total if paid else 0,
        amount_remaining=0 if paid else total,
        amount_overpaid=0,
        attempt_count=1 if paid else 0,
        attempted=paid,
        next_payment_attempt=None,
        due_date=None,
        period_start=created - 2_678_400,
        period_end=created,
        subtotal=subtotal,
        subtotal_excluding_tax=subtotal,
        total=total,
        total_excluding_tax=total - exclusive,
        total_discount_amounts=[{"amount": discount, "discount": "di_b1"}] if discount else [],
        total_taxes=taxes,
        shipping_cost=None,
        last_finalization_error=None,
        from_invoice=None,
        webhooks_delivered_at=created,
        effective_at=created,
        lines=listed(embedded, f"/v1/invoices/{invoice_id}/lines", has_more),
        parent={
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {"metadata": {}, "subscription": subscription},
        }
        if subscription
        else None,
        payments=listed(
            [
                {
                    "status": "paid",
                    "payment": {"type": "payment_intent", "payment_intent": payment_intent},
                }
            ]
            if payment_intent and paid
            else [],
            f"/v1/invoices/{invoice_id}/payments",
        ),
        status_transitions={
            "finalized_at": created,
            "marked_uncollectible_at": None,
            "paid_at": (paid_at or created + 60) if paid else None,
            "voided_at": None,
        },
    )


def invoice_2024(
    invoice_id: str,
    lines: list[dict[str, Any]],
    *,
    customer: str = "cus_old",
    subscription: str | None = "sub_old",
    charge: str | None = "ch_old",
    status: str = "paid",
    created: int = 1_709_251_200,
    itemised_discounts: bool = True,
) -> dict[str, Any]:
    """An invoice as API versions 2020-2024 sent it: ``subscription`` and ``charge``
    at the top, ``total_tax_amounts``, and ``tax``."""
    subtotal = sum(line["amount"] for line in lines)
    discount = sum(d["amount"] for line in lines for d in line.get("discount_amounts") or [])
    taxes = [t for line in lines for t in line.get("tax_amounts") or []]
    tax = sum(t["amount"] for t in taxes)
    exclusive = sum(t["amount"] for t in taxes if not t["inclusive"])
    total = subtotal - discount + exclusive
    invoice = {
        "id": invoice_id,
        "object": "invoice",
        "amount_due": total,
        "amount_paid": total if status == "paid" else 0,
        "amount_remaining": 0 if status == "paid" else total,
        "attempt_count": 1,
        "attempted": True,
        "billing_reason": "subscription_cycle",
        "charge": charge,
        "created": created,
        "currency": "eur",
        "customer": customer,
        "discount": None,
        "lines": listed(lines, f"/v1/invoices/{invoice_id}/lines"),
        "livemode": False,
        "paid": status == "paid",
        "payment_intent": None,
        "period_end": created,
        "period_start": created - 2_592_000,
        "status": status,
        "status_transitions": {
            "finalized_at": created,
            "paid_at": created + 5 if status == "paid" else None,
        },
        "subscription": subscription,
        "subtotal": subtotal,
        "tax": tax,
        "total": total,
        "total_tax_amounts": taxes,
    }
    if itemised_discounts:
        invoice["total_discount_amounts"] = (
            [{"amount": discount, "discount": "di_old"}] if discount else []
        )
    return invoice


def credit_note_line_basil(
    fx: dict[str, Any],
    line_id: str,
    *,
    amount: int,
    invoice_line: str | None,
    taxes: list[dict[str, Any]] | None = None,
    discount: int = 0,
) -> dict[str, Any]:
    return _from(
        fx,
        "credit_note_line_item",
        id=line_id,
        amount=amount,
        description="Pro plan" if invoice_line else "Goodwill credit",
        discount_amount=discount,
        discount_amounts=[{"amount": discount, "discount": "di_b1"}] if discount else [],
        invoice_line_item=invoice_line,
        quantity=1,
        tax_rates=[],
        taxes=taxes or [],
        type="invoice_line_item" if invoice_line else "custom_line_item",
        unit_amount=None if invoice_line else amount,
        unit_amount_decimal=None if invoice_line else str(amount),
        pretax_credit_amounts=[],
        metadata={},
    )


def credit_note_basil(
    fx: dict[str, Any],
    note_id: str,
    invoice_id: str,
    lines: list[dict[str, Any]],
    *,
    customer: str = "cus_b1",
    status: str = "issued",
    created: int = 1_772_409_600,
    refunds: list[str] = (),
    has_more: bool = False,
    reason: str = "product_unsatisfactory",
    out_of_band: int | None = None,
) -> dict[str, Any]:
    subtotal = sum(line["amount"] for line in lines)
    discount = sum(d["amount"] for line in lines for d in line.get("discount_amounts") or [])
    taxes = [t for line in lines for t in line.get("taxes") or []]
    exclusive = sum(t["amount"] for t in taxes if t["tax_behavior"] == "exclusive")
    total = subtotal - discount + exclusive
    refunded = total - (out_of_band or 0) if refunds else 0
    embedded = lines[:1] if has_more else lines
    return _from(
        fx,
        "credit_note",
        id=note_id,
        invoice=invoice_id,
        customer=customer,
        status=status,
        type="post_payment" if refunds or out_of_band else "pre_payment",
        reason=reason,
        currency="usd",
        created=created,
        effective_at=created,
        amount=total,
        amount_shipping=0,
        subtotal=subtotal,
        subtotal_excluding_tax=subtotal - discount,
        total=total,
        total_excluding_tax=total - exclusive,
        discount_amount=discount,
        discount_amounts=[{"amount": discount, "discount": "di_b1"}] if discount else [],
        total_taxes=taxes,
        out_of_band_amount=out_of_band,
        pre_payment_amount=0 if refunds or out_of_band else total,
        post_payment_amount=total if refunds or out_of_band else 0,
        refunds=[
            {
                "amount_refunded": refunded,
                "refund": r,
                "type": "refund",
                "payment_record_refund": None,
            }
            for r in refunds
        ],
        shipping_cost=None,
        pretax_credit_amounts=[],
        voided_at=created + 3600 if status == "void" else None,
        number=f"{note_id[-4:].upper()}-CN-01",
        pdf=f"https://pay.stripe.com/credit_notes/{note_id}/pdf",
        memo=None,
        lines=listed(embedded, f"/v1/credit_notes/{note_id}/lines", has_more),
    )


def credit_note_2023(
    note_id: str,
    invoice_id: str,
    *,
    amount: int,
    refund: str | None,
    tax: int = 0,
    created: int = 1_709_856_000,
) -> dict[str, Any]:
    """A credit note as API versions before 2025 sent it: one ``refund`` id, lines
    with ``tax_amounts``."""
    taxes = [tax_2024(tax, amount - tax, DE_VAT)] if tax else []
    return {
        "id": note_id,
        "object": "credit_note",
        "amount": amount,
        "created": created,
        "currency": "eur",
        "customer": "cus_old",
        "discount_amount": 0,
        "discount_amounts": [],
        "invoice": invoice_id,
        "lines": listed(
            [
                {
                    "id": f"cnli_{note_id[3:]}",
                    "object": "credit_note_line_item",
                    "amount": amount,
                    "discount_amount": 0,
                    "discount_amounts": [],
                    "invoice_line_item": "il_old1",
                    "livemode": False,
                    "quantity": 1,
                    "tax_amounts": taxes,
                    "tax_rates": [],
                    "type": "invoice_line_item",
                    "unit_amount": None,
                }
            ],
            f"/v1/credit_notes/{note_id}/lines",
        ),
        "livemode": False,
        "memo": "Refund for a duplicate charge",
        "number": "OLD-CN-01",
        "out_of_band_amount": None,
        "reason": "duplicate",
        "refund": refund,
        "status": "issued",
        "subtotal": amount,
        "tax_amounts": taxes,
        "total": amount,
        "type": "post_payment",
        "voided_at": None,
    }


def checkout_session(
    fx: dict[str, Any],
    session_id: str,
    *,
    status: str = "complete",
    mode: str = "payment",
    created: int = 1_772_323_200,
    amount: int | None = 4900,
    payment_status: str | None = None,
    **values: Any,
) -> dict[str, Any]:
    """A session of today's shape (``customer_details`` only once the customer typed
    them in, i.e. when it completed)."""
    complete = status == "complete"
    if payment_status is None:
        payment_status = "paid" if complete and mode != "setup" else "unpaid"
        if mode == "setup":
            payment_status = "no_payment_required"
    session = _from(
        fx,
        "checkout.session",
        id=session_id,
        status=status,
        mode=mode,
        created=created,
        expires_at=created + 86_400,
        currency=None if mode == "setup" else "usd",
        amount_subtotal=None if mode == "setup" else amount,
        amount_total=None if mode == "setup" else amount,
        payment_status=payment_status,
        customer="cus_b1" if complete else None,
        customer_details={
            "address": {
                "city": "Oakland",
                "country": "US",
                "line1": "1 Main St",
                "line2": None,
                "postal_code": "94607",
                "state": "CA",
            },
            "email": "buyer@example.com",
            "name": "Jordan Buyer",
            "phone": None,
            "tax_exempt": "none",
            "tax_ids": [],
            "business_name": None,
            "individual_name": None,
        }
        if complete
        else None,
        payment_intent=None,
        subscription=None,
        setup_intent=None,
        invoice=None,
        payment_link=None,
        total_details={"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        shipping_cost=None,
        currency_conversion=None,
        url=None if status != "open" else f"https://checkout.stripe.com/c/pay/{session_id}",
    )
    session.update(values)
    return session


def checkout_session_2019(session_id: str, *, created: int | None = None, **values: Any) -> dict:
    """A session as API versions before 2020-08-27 sent it: no status, no amounts."""
    session = {
        "id": session_id,
        "object": "checkout.session",
        "billing_address_collection": None,
        "cancel_url": "https://example.com/cancel",
        "client_reference_id": "order-17",
        "customer": "cus_old",
        "customer_email": "old@example.com",
        "display_items": [
            {
                "amount": 2000,
                "currency": "eur",
                "quantity": 1,
                "type": "sku",
                "sku": {"id": "sku_old"},
            }
        ],
        "livemode": False,
        "locale": None,
        "mode": "payment",
        "payment_intent": "pi_old_checkout",
        "payment_method_types": ["card"],
        "setup_intent": None,
        "submit_type": None,
        "subscription": None,
        "success_url": "https://example.com/success",
    }
    if created is not None:
        session["created"] = created
    session.update(values)
    return session


def setup_intent(
    fx: dict[str, Any], intent_id: str, *, status: str = "succeeded", **values: Any
) -> dict[str, Any]:
    error = (
        {
            "code": "card_declined",
            "decline_code": "insufficient_funds",
            "message": "Your card has insufficient funds.",
            "type": "card_error",
        }
        if status == "requires_payment_method"
        else None
    )
    intent = _from(
        fx,
        "setup_intent",
        id=intent_id,
        status=status,
        customer="cus_b1",
        created=1_772_323_200,
        client_secret=f"{intent_id}_secret_test",
        last_setup_error=error,
        next_action=None,
        payment_method="pm_b1" if status != "requires_payment_method" else None,
        latest_attempt=None,
        cancellation_reason="abandoned" if status == "canceled" else None,
    )
    intent.update(values)
    return intent


def early_fraud_warning(
    fx: dict[str, Any], warning_id: str, *, charge: str = "ch_b1", **values: Any
) -> dict[str, Any]:
    warning = _from(
        fx,
        "radar.early_fraud_warning",
        id=warning_id,
        charge=charge,
        payment_intent="pi_b1",
        fraud_type="made_with_stolen_card",
        actionable=True,
        created=1_772_409_600,
    )
    warning.update(values)
    return warning


def review(
    fx: dict[str, Any], review_id: str, *, open_: bool = True, **values: Any
) -> dict[str, Any]:
    found = _from(
        fx,
        "review",
        id=review_id,
        charge="ch_b1",
        payment_intent="pi_b1",
        open=open_,
        opened_reason="rule",
        reason="rule" if open_ else "refunded_as_fraud",
        closed_reason=None if open_ else "refunded_as_fraud",
        created=1_772_409_600,
        billing_zip="94607",
        ip_address="203.0.113.7",
        ip_address_location={
            "city": "Oakland",
            "country": "US",
            "latitude": 37.8,
            "longitude": -122.27,
            "region": "CA",
        },
    )
    found.update(values)
    return found


def review_2019(review_id: str, *, open_: bool, **values: Any) -> dict[str, Any]:
    """A review as API versions before 2024 sent it: the closing reason in ``reason``."""
    found = {
        "id": review_id,
        "object": "review",
        "billing_zip": None,
        "charge": "ch_old",
        "created": 1_709_856_000,
        "ip_address": None,
        "livemode": False,
        "open": open_,
        "opened_reason": "rule",
        "reason": "rule" if open_ else "refunded_as_fraud",
        "session": None,
    }
    found.update(values)
    return found
