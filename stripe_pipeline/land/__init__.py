"""Landing raw Stripe events: signature check, envelope validation, durable insert."""
