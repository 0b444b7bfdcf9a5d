"""Payment recovery (dunning): strategies, attempt limits, retries and fraud rules.

The flow: a failed payment opens a recovery (``open``) with a strategy chosen from the
decline code (``strategies``); due retries go through the Stripe API (``retry``) only
after the database-wide attempt limiter agrees (``limits``); fraud rules over recent
events flag customers (``fraud``). Every decision is written to the audit log.
"""
