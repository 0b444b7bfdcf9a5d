"""Support escalation: tickets a person looks at, and how they are notified."""
