"""Personal data and retention: what is personal, erasure on request, retention by age.

- ``personal``: the one list of personal columns and payload paths;
- ``redact``: pure functions that blank them (audit entries, payloads, rows);
- ``guard``: the calls write paths make so erased customers stay erased;
- ``erase``: erase one customer, erase deleted customers after a delay, sweep new events;
- ``retention``: drop old payloads to their envelope, prune deliveries and resolved
  tickets, in short batches.

See docs/privacy.md.
"""
