"""Where personal data sits: the one list every privacy function reads.

Personal here means data that identifies or describes a person: email, name, phone,
postal addresses, free text written about them (descriptions, dispute evidence), and
the printed details of their card (last 4 digits, expiry). Not personal for our
purposes, and kept on erasure: Stripe ids, amounts, currencies, statuses, dates, card
brand and Stripe's card ``fingerprint`` (a pseudonymous hash of the card number that
payment-attempt limits and fraud rules key on; it cannot be turned back into a card
number, and Stripe's fraud tools keep it too).

Three views of the same facts:

- ``PERSONAL_COLUMNS``: per domain table, the columns erasure blanks and audit rows
  name but never copy: the columns the catalog declares ``personal``.
- ``AUDIT_OBJECT_TYPES``: the audit log's ``object_type`` of each of those tables.
- ``PAYLOAD_PATHS``: per Stripe object type (``data.object.object``), the paths in a
  raw payload that hold personal data. A path is dotted keys; ``key[]`` walks every
  element of a list; a trailing ``:text`` applies only when the value is a string
  (pre-2014 dispute evidence was one free-text string).
"""

from __future__ import annotations

from collections.abc import Mapping

from stripe_pipeline.catalog import CATALOG

# Dispute evidence fields that hold text about a person (the others are file ids,
# dates, a carrier name or a charge id, and stay).
EVIDENCE_PERSONAL_FIELDS: tuple[str, ...] = (
    "access_activity_log",
    "billing_address",
    "cancellation_policy_disclosure",
    "cancellation_rebuttal",
    "customer_email_address",
    "customer_name",
    "customer_purchase_ip",
    "duplicate_charge_explanation",
    "enhanced_evidence",
    "product_description",
    "refund_policy_disclosure",
    "refund_refusal_explanation",
    "shipping_address",
    "shipping_tracking_number",
    "uncategorized_text",
)

# the columns each resource declares ``personal`` (stripe_pipeline.catalog); a dispute's
# evidence is a JSON document of which only EVIDENCE_PERSONAL_FIELDS are blanked
PERSONAL_COLUMNS: Mapping[str, tuple[str, ...]] = {
    r.table_name: r.personal for r in CATALOG.resources if r.personal
}

AUDIT_OBJECT_TYPES: Mapping[str, str] = {
    r.table_name: r.object_type for r in CATALOG.resources if r.personal
}

# JSON columns whose personal content is inside the document, not the whole value
JSON_REDACTED_COLUMNS: Mapping[tuple[str, str], tuple[str, ...]] = {
    ("stripe_disputes", "evidence"): EVIDENCE_PERSONAL_FIELDS,
}


def personal_audit_fields() -> dict[str, tuple[str, ...]]:
    """Audit ``object_type`` -> the personal fields its before/after may name."""
    return {AUDIT_OBJECT_TYPES[t]: cols for t, cols in PERSONAL_COLUMNS.items()}


_CARD_PRINTED = ("last4", "dynamic_last4", "exp_month", "exp_year")
# a legacy card or source object (customer.source.*, charge.source)
_LEGACY_CARD = (
    "name",
    "address_line1",
    "address_line2",
    "address_city",
    "address_state",
    "address_zip",
    "address_country",
    *_CARD_PRINTED,
)
_PAYMENT_METHOD = ("billing_details", *(f"card.{f}" for f in _CARD_PRINTED))
_CHARGE = (
    "billing_details",
    "receipt_email",
    "receipt_url",
    "shipping",
    "description",
    *(f"payment_method_details.card.{f}" for f in _CARD_PRINTED),
    *(f"source.{f}" for f in _LEGACY_CARD),
    "source.owner",
)

PAYLOAD_PATHS: Mapping[str, tuple[str, ...]] = {
    "customer": (
        "email",
        "name",
        "phone",
        "address",
        "shipping",
        "description",
        "tax_ids.data[].value",
        *(f"sources.data[].{f}" for f in (*_LEGACY_CARD, "owner", "account_holder_name")),
    ),
    "charge": _CHARGE,
    "payment_intent": (
        "receipt_email",
        "shipping",
        "description",
        *(f"charges.data[].{p}" for p in _CHARGE),
        *(f"last_payment_error.payment_method.{p}" for p in _PAYMENT_METHOD),
        *(f"last_payment_error.source.{f}" for f in _LEGACY_CARD),
    ),
    "payment_method": _PAYMENT_METHOD,
    "setup_intent": tuple(f"last_setup_error.payment_method.{p}" for p in _PAYMENT_METHOD),
    "invoice": (
        "customer_email",
        "customer_name",
        "customer_phone",
        "customer_address",
        "customer_shipping",
        "customer_tax_ids",
        "description",
        "hosted_invoice_url",
        "invoice_pdf",
    ),
    "dispute": ("evidence:text", *(f"evidence.{f}" for f in EVIDENCE_PERSONAL_FIELDS)),
    "subscription": ("description",),
    "refund": ("description",),
    "card": _LEGACY_CARD,
    "bank_account": ("account_holder_name", "last4"),
    "source": ("owner", *(f"card.{f}" for f in _CARD_PRINTED)),
    "tax_id": ("value",),
    "checkout.session": (
        "customer_details",
        "customer_email",
        "shipping",
        "shipping_details",
        "collected_information",
    ),
}

# Keys whose string values identify the person wherever else they are quoted (a
# ticket's error text, metadata, a description): erasure replaces those strings too.
# Postal codes and card digits are left out on purpose: as bare numbers they would
# also match unrelated digits (a 4-digit postcode inside a date).
QUOTED_KEYS = frozenset(
    {
        "email",
        "name",
        "phone",
        "line1",
        "line2",
        "receipt_email",
        "customer_email",
        "customer_name",
        "customer_phone",
        "customer_email_address",
        "account_holder_name",
    }
)
