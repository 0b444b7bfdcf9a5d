"""All configuration, read from the environment in one place.

Every environment variable the project reads is listed in ``ENVIRONMENT`` so the
README table and ``stripe-pipeline --help`` can never drift from the code.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_ENDPOINT = "default"
# how metrics and the delivery audit name requests to endpoints nobody configured
UNKNOWN_ENDPOINT = "unknown"
RESERVED_ENDPOINTS = (DEFAULT_ENDPOINT, UNKNOWN_ENDPOINT)
ENDPOINT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")

ENVIRONMENT: dict[str, str] = {
    "STRIPE_PIPELINE_DATABASE_URL": "SQLAlchemy URL of the app database "
    "(default: SQLite file `<data dir>/stripe_pipeline.db`; production: "
    "`postgresql+psycopg://user@host/db`).",
    "STRIPE_PIPELINE_DATA_DIR": "Folder for the embedded SQLite database and local state "
    "(default `./data`).",
    "STRIPE_WEBHOOK_SECRET": "Signing secret(s) of the default endpoint, comma-separated "
    "while rolling secrets (`whsec_new,whsec_old`).",
    "STRIPE_WEBHOOK_SECRET_<NAME>": "Secret(s) of the extra endpoint `/webhooks/stripe/<name>` "
    "(for example `STRIPE_WEBHOOK_SECRET_CONNECT`). An endpoint exists once it has a secret.",
    "STRIPE_WEBHOOK_TOLERANCE": "Largest difference in seconds between a signature's "
    "timestamp and now, in the past or the future (default 300).",
    "STRIPE_WEBHOOK_MAX_BYTES": "Largest accepted webhook body in bytes (default 1048576).",
    "STRIPE_WEBHOOK_READ_TIMEOUT": "Seconds a client has to send one request's headers and "
    "body (default 10); a slower one is answered 408 and disconnected.",
    "STRIPE_WEBHOOK_LIVEMODE": "Optional guard: `live` or `test` rejects events of the other mode.",
    "STRIPE_WEBHOOK_INVALID_LIMIT": "Invalid requests per minute one address may send before "
    "it is answered 429 (default 120).",
    "STRIPE_API_KEY": "Stripe secret key for the API client (reconciliation, recovery, and "
    "the refunds and invoice or credit note lines an event does not embed).",
    "STRIPE_API_BASE": "Override of the Stripe API base URL (e.g. a local fake such as "
    "localstripe on `http://127.0.0.1:8420`).",
    "DAGSTER_HOME": "Dagster instance folder (default `<data dir>/dagster_home` for `dev`).",
    "STRIPE_PIPELINE_LOG_LEVEL": "Log level of the JSON logs (default INFO).",
    "STRIPE_PIPELINE_BATCH_SIZE": "Events claimed per processing batch (default 2000).",
    "STRIPE_PIPELINE_PROCESSING_WORKERS": "Claim/apply loops per processing run on "
    "PostgreSQL (default 2, at most 4; SQLite always 1).",
    "STRIPE_PIPELINE_MAX_BATCHES": "Batches one Dagster processing run takes at most "
    "(default 100); the sensor starts the next run.",
    "STRIPE_PIPELINE_LEASE_SECONDS": "Claim lease: longest a batch may stall; a hung run "
    "loses its batch after it (PostgreSQL: the session's idle-in-transaction timeout; "
    "SQLite: a crashed run's events are taken again after it). Default 300.",
    "STRIPE_PIPELINE_LINGER_SECONDS": "Seconds a processing run stays up after draining to "
    "take new events at once (default 0; ~15 for low latency).",
    "STRIPE_PIPELINE_RETRY_BASE_SECONDS": "First retry delay of a temporary error (default 30).",
    "STRIPE_PIPELINE_RETRY_FACTOR": "Backoff factor between retries (default 2).",
    "STRIPE_PIPELINE_RETRY_CAP_SECONDS": "Longest retry delay (default 21600).",
    "STRIPE_PIPELINE_RETRY_MAX_RETRIES": "Retries before an event is escalated (default 8).",
    "STRIPE_PIPELINE_RETRY_JITTER": "Backoff jitter: equal, full or none (default equal).",
    "STRIPE_PIPELINE_SENSOR_INTERVAL": "Seconds between stripe_events_sensor ticks (default 5).",
    "STRIPE_PIPELINE_MAX_PROCESSING_RUNS": "Processing runs queued or running at once (default 1).",
    "STRIPE_PIPELINE_MAX_QUEUE_AGE_SECONDS": "Oldest due event age the queue_keeps_up check "
    "allows (default 900).",
    "STRIPE_PIPELINE_NOTIFY_URLS": "Where critical tickets are announced: comma-separated "
    "http(s) webhook URLs or apprise URLs (default: log only).",
    "STRIPE_PIPELINE_CHECK_<FIELD>": "Thresholds of the monitoring checks, e.g. "
    "STRIPE_PIPELINE_CHECK_PENDING_MAX_MINUTES=30 (see docs/monitoring.md).",
    "STRIPE_PIPELINE_RECONCILIATION_TZ": "Timezone of the nightly reconciliation (default UTC).",
    "STRIPE_PIPELINE_RECONCILIATION_CRON": "Cron of the nightly reconciliation "
    "(default 0 2 * * *).",
    "STRIPE_PIPELINE_RECONCILIATION_TRAILING_DAYS": "Days before yesterday the nightly "
    "reconciliation re-checks, one partition run each (default 2).",
    "STRIPE_PIPELINE_RECONCILIATION_START_DATE": "First daily partition of "
    "reconciliation_daily, YYYY-MM-DD (default 2011-01-01: any Stripe account's history).",
    "STRIPE_PIPELINE_SPOOL_DIR": "Where reconciliation and backfill spool listed objects, "
    "resumable after a crash (default <temp dir>/stripe-pipeline).",
    "STRIPE_PIPELINE_RECONCILIATION_SCHEDULE": "`on` (default) or `off`: whether "
    "nightly_reconciliation_schedule runs with the Dagster daemon without a click (a state "
    "set in the Dagster UI wins over it).",
    "STRIPE_PIPELINE_FRAUD_SCHEDULE": "`on` (default) or `off`: fraud_screening_schedule "
    "(every 10 minutes; it only reads events and opens tickets).",
    "STRIPE_PIPELINE_RECOVERY_SCHEDULE": "`off` (default) or `on`: payment_recovery_schedule "
    "(every 15 minutes), which retries failed payments and so charges cards.",
    "STRIPE_PIPELINE_MODELS_DIR": "Folder of the SQL models (default dbt_like_sql/).",
    "STRIPE_PIPELINE_RETENTION_PAYLOAD_DAYS": "Days a processed or ignored event keeps its raw "
    "payload before it is dropped to its envelope (default 90; 0 or off keeps payloads).",
    "STRIPE_PIPELINE_RETENTION_DELIVERY_DAYS": "Days webhook_deliveries rows are kept "
    "(default 30; 0 or off keeps them).",
    "STRIPE_PIPELINE_RETENTION_TICKET_DAYS": "Days a resolved support ticket is kept after "
    "it was resolved (default 365; 0 or off keeps them).",
    "STRIPE_PIPELINE_RETENTION_BATCH_SIZE": "Rows per retention transaction (default 5000).",
    "STRIPE_PIPELINE_RETENTION_PAUSE_RATIO": "Pause after each retention batch, as a multiple "
    "of the batch's own time, so the receiver keeps its share of the machine (default 1; "
    "0: full speed).",
    "STRIPE_PIPELINE_ERASE_AFTER_DELETE_DAYS": "Days after Stripe's customer.deleted before "
    "the daily privacy run erases that customer's personal data (default 30; 0 or off: "
    "only on request).",
    "STRIPE_PIPELINE_PRIVACY_SCHEDULE": "on or off: the daily privacy schedule (retention and "
    "due erasures) starts running by default (default on).",
    "STRIPE_PIPELINE_PRIVACY_CRON": "Cron of the daily privacy run, UTC (default 30 3 * * *).",
    "DAGSTER_PG_HOST / _PORT / _USERNAME / _PASSWORD / _DB": "Dagster's own PostgreSQL storage "
    "in deploy/dagster.yaml.",
}


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc


def split_secrets(raw: str | None) -> tuple[str, ...]:
    """Parse a comma-separated secret list, so a secret can be rolled without downtime."""
    if not raw:
        return ()
    return tuple(s.strip() for s in raw.split(",") if s.strip())


class ConfigError(ValueError):
    """A setting is present but unusable; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    database_url: str
    data_dir: Path
    webhook_secrets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    webhook_tolerance: int = 300
    webhook_max_bytes: int = 1024 * 1024
    webhook_read_timeout: float = 10.0
    webhook_livemode: bool | None = None
    invalid_requests_per_minute: int = 120
    stripe_api_key: str | None = None
    stripe_api_base: str | None = None
    log_level: str = "INFO"

    @property
    def is_embedded_sqlite(self) -> bool:
        """True for the default local SQLite file, which may migrate itself."""
        return self.database_url == default_database_url(self.data_dir)

    def __repr__(self) -> str:  # never print secrets
        endpoints = {name: f"<{len(s)} secret(s)>" for name, s in self.webhook_secrets.items()}
        return (
            f"Settings(database_url={redact_url(self.database_url)!r}, endpoints={endpoints}, "
            f"tolerance={self.webhook_tolerance}, max_bytes={self.webhook_max_bytes})"
        )


def default_database_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'stripe_pipeline.db').resolve()}"


def redact_url(url: str) -> str:
    """Hide the password of a database URL before it reaches a log line."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    value = _float(env, name, default)
    if not 0 < value < 86_400:
        raise ConfigError(f"{name} must be a number of seconds above 0, got {value}")
    return value


@dataclass(frozen=True)
class ProcessingOptions:
    """Deployment defaults of event processing (a Dagster run's config may override them)."""

    # measured: 2,000 per batch beat 1,000 by ~15% on PostgreSQL (fewer per-batch
    # statements, more folding) for ~10 MB more memory
    batch_size: int = 2000
    workers: int = 2
    # bounded runs: a long backlog is drained by successive runs, so a run never
    # outlives its lease and the sensor stays in charge of pacing
    max_batches: int = 100
    lease_seconds: int = 300
    linger_seconds: float = 0.0
    retry_base_seconds: float = 30.0
    retry_factor: float = 2.0
    retry_cap_seconds: float = 6 * 3600.0
    retry_max_retries: int = 8
    retry_jitter: str = "equal"


# loops per processing run: on PostgreSQL each holds two pooled connections at a moment
# (its batch and the claim journal) and an engine's pool holds 10; more than two loops
# measured slower anyway (they contend for the interpreter and for the same rows)
MAX_PROCESSING_WORKERS = 4


def _workers(env: Mapping[str, str], default: int) -> int:
    workers = _int(env, "STRIPE_PIPELINE_PROCESSING_WORKERS", default)
    if not 1 <= workers <= MAX_PROCESSING_WORKERS:
        raise ConfigError(
            "STRIPE_PIPELINE_PROCESSING_WORKERS must be between 1 and "
            f"{MAX_PROCESSING_WORKERS}, got {workers}"
        )
    return workers


def load_processing_options(env: Mapping[str, str] | None = None) -> ProcessingOptions:
    """Processing settings from ``STRIPE_PIPELINE_*`` variables; unset means the default."""
    env = os.environ if env is None else env
    d = ProcessingOptions()
    jitter = (env.get("STRIPE_PIPELINE_RETRY_JITTER") or d.retry_jitter).strip().lower()
    if jitter not in ("equal", "full", "none"):
        raise ConfigError("STRIPE_PIPELINE_RETRY_JITTER must be equal, full or none")
    return ProcessingOptions(
        batch_size=max(1, _int(env, "STRIPE_PIPELINE_BATCH_SIZE", d.batch_size)),
        workers=_workers(env, d.workers),
        max_batches=max(1, _int(env, "STRIPE_PIPELINE_MAX_BATCHES", d.max_batches)),
        lease_seconds=max(1, _int(env, "STRIPE_PIPELINE_LEASE_SECONDS", d.lease_seconds)),
        linger_seconds=_float(env, "STRIPE_PIPELINE_LINGER_SECONDS", d.linger_seconds),
        retry_base_seconds=_float(env, "STRIPE_PIPELINE_RETRY_BASE_SECONDS", d.retry_base_seconds),
        retry_factor=_float(env, "STRIPE_PIPELINE_RETRY_FACTOR", d.retry_factor),
        retry_cap_seconds=_float(env, "STRIPE_PIPELINE_RETRY_CAP_SECONDS", d.retry_cap_seconds),
        retry_max_retries=max(
            0, _int(env, "STRIPE_PIPELINE_RETRY_MAX_RETRIES", d.retry_max_retries)
        ),
        retry_jitter=jitter,
    )


@dataclass(frozen=True)
class OrchestrationOptions:
    """How the Dagster processing sensor and its checks pace and judge the queue."""

    sensor_interval_seconds: int = 5
    max_processing_runs: int = 1
    max_queue_age_seconds: float = 900.0


def load_orchestration_options(env: Mapping[str, str] | None = None) -> OrchestrationOptions:
    """``STRIPE_PIPELINE_SENSOR_INTERVAL``, ``_MAX_PROCESSING_RUNS``, ``_MAX_QUEUE_AGE_SECONDS``."""
    env = os.environ if env is None else env
    d = OrchestrationOptions()
    return OrchestrationOptions(
        sensor_interval_seconds=max(
            1, _int(env, "STRIPE_PIPELINE_SENSOR_INTERVAL", d.sensor_interval_seconds)
        ),
        max_processing_runs=max(
            1, _int(env, "STRIPE_PIPELINE_MAX_PROCESSING_RUNS", d.max_processing_runs)
        ),
        max_queue_age_seconds=_float(
            env, "STRIPE_PIPELINE_MAX_QUEUE_AGE_SECONDS", d.max_queue_age_seconds
        ),
    )


NOTIFY_URLS_ENV = "STRIPE_PIPELINE_NOTIFY_URLS"
CHECK_ENV_PREFIX = "STRIPE_PIPELINE_CHECK_"


def load_notify_urls(env: Mapping[str, str] | None = None) -> list[str]:
    """``STRIPE_PIPELINE_NOTIFY_URLS``, comma-separated; empty: log only."""
    env = os.environ if env is None else env
    return [u.strip() for u in (env.get(NOTIFY_URLS_ENV) or "").split(",") if u.strip()]


def load_check_overrides(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``STRIPE_PIPELINE_CHECK_<FIELD>`` values by lower-case field name (the monitoring
    thresholds convert them to their types)."""
    env = os.environ if env is None else env
    return {
        key[len(CHECK_ENV_PREFIX) :].lower(): value.strip()
        for key, value in env.items()
        if key.startswith(CHECK_ENV_PREFIX) and value.strip()
    }


def load_spool_dir(env: Mapping[str, str] | None = None) -> Path | None:
    """``STRIPE_PIPELINE_SPOOL_DIR``: where reconciliation spools listings; None: the
    temp directory."""
    env = os.environ if env is None else env
    configured = (env.get("STRIPE_PIPELINE_SPOOL_DIR") or "").strip()
    return Path(configured) if configured else None


DEFAULT_RECONCILIATION_CRON = "0 2 * * *"


@dataclass(frozen=True)
class ScheduleOptions:
    """Which schedules run with the Dagster daemon by default, and when reconciliation runs.

    Reconciliation and fraud screening charge nothing: they run without a click.
    Payment recovery charges cards, so it stays opt-in.
    """

    reconciliation: bool = True
    fraud_screening: bool = True
    payment_recovery: bool = False
    reconciliation_timezone: str = "UTC"
    reconciliation_cron: str = DEFAULT_RECONCILIATION_CRON
    # the first daily partition of reconciliation (UTC days of ``created``): Stripe
    # launched in 2011, so by default every object an account can hold has a partition
    reconciliation_start_date: str = "2011-01-01"
    # the nightly run materializes yesterday and re-checks this many days before it
    reconciliation_trailing_days: int = 2


@dataclass(frozen=True)
class PrivacyOptions:
    """Retention ages and erasure delay (docs/privacy.md says why these defaults).

    ``None`` means "never": the data of that kind is kept (or, for the erasure delay,
    deleted customers are erased only on request).
    """

    # raw payloads: long enough to replay and investigate a quarter's events; Stripe
    # itself keeps events 30 days
    payload_days: int | None = 90
    # deliveries hold client IP addresses (personal data) and feed hourly health marts
    delivery_days: int | None = 30
    # resolved tickets: a year of support history (year-on-year support marts)
    ticket_days: int | None = 365
    # one month after customer.deleted: GDPR art. 12(3) answers within a month, and late
    # events (Stripe retries for 3 days, /v1/events keeps 30) have arrived by then
    erase_after_delete_days: int | None = 30
    batch_size: int = 5000
    # after each batch, wait this many times as long as the batch took: the run then
    # uses at most half the time it could, and the receiver keeps its share of the
    # machine (0: full speed, for a one-off cleanup in a quiet hour)
    pause_ratio: float = 1.0
    schedule_enabled: bool = True
    cron: str = "30 3 * * *"


_OFF = ("off", "false", "no", "never", "0")


def _days(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in _OFF:
        return None
    days = _int(env, name, 0)
    if days < 0:
        raise ConfigError(f"{name} must be a number of days, 0 or off, got {raw!r}")
    return days


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("on", "true", "yes", "1"):
        return True
    if raw in _OFF:
        return False
    raise ConfigError(f"{name} must be on or off, got {raw!r}")


def load_schedule_options(env: Mapping[str, str] | None = None) -> ScheduleOptions:
    """Schedule switches and the reconciliation's time; a wrong timezone is an error
    (at code location load) rather than a run at another hour."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    env = os.environ if env is None else env
    timezone = (env.get("STRIPE_PIPELINE_RECONCILIATION_TZ") or "UTC").strip()
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"STRIPE_PIPELINE_RECONCILIATION_TZ={timezone!r} is not an IANA timezone"
        ) from exc
    d = ScheduleOptions()
    return ScheduleOptions(
        reconciliation=_switch(env, "STRIPE_PIPELINE_RECONCILIATION_SCHEDULE", d.reconciliation),
        fraud_screening=_switch(env, "STRIPE_PIPELINE_FRAUD_SCHEDULE", d.fraud_screening),
        payment_recovery=_switch(env, "STRIPE_PIPELINE_RECOVERY_SCHEDULE", d.payment_recovery),
        reconciliation_timezone=timezone,
        reconciliation_cron=(
            env.get("STRIPE_PIPELINE_RECONCILIATION_CRON") or d.reconciliation_cron
        ).strip(),
        reconciliation_start_date=_date(
            env, "STRIPE_PIPELINE_RECONCILIATION_START_DATE", d.reconciliation_start_date
        ),
        reconciliation_trailing_days=max(
            0,
            _int(
                env, "STRIPE_PIPELINE_RECONCILIATION_TRAILING_DAYS", d.reconciliation_trailing_days
            ),
        ),
    )


def _date(env: Mapping[str, str], name: str, default: str) -> str:
    """An ISO date (YYYY-MM-DD); a wrong one fails the code location's load."""
    from datetime import date

    value = (env.get(name) or default).strip()
    try:
        date.fromisoformat(value)
    except ValueError as exc:
        raise ConfigError(f"{name}={value!r} is not a date (YYYY-MM-DD)") from exc
    return value


def load_privacy_options(env: Mapping[str, str] | None = None) -> PrivacyOptions:
    """Retention and erasure settings from ``STRIPE_PIPELINE_RETENTION_*`` and friends."""
    env = os.environ if env is None else env
    d = PrivacyOptions()
    return PrivacyOptions(
        payload_days=_days(env, "STRIPE_PIPELINE_RETENTION_PAYLOAD_DAYS", d.payload_days),
        delivery_days=_days(env, "STRIPE_PIPELINE_RETENTION_DELIVERY_DAYS", d.delivery_days),
        ticket_days=_days(env, "STRIPE_PIPELINE_RETENTION_TICKET_DAYS", d.ticket_days),
        erase_after_delete_days=_days(
            env, "STRIPE_PIPELINE_ERASE_AFTER_DELETE_DAYS", d.erase_after_delete_days
        ),
        batch_size=max(1, _int(env, "STRIPE_PIPELINE_RETENTION_BATCH_SIZE", d.batch_size)),
        pause_ratio=max(0.0, _float(env, "STRIPE_PIPELINE_RETENTION_PAUSE_RATIO", d.pause_ratio)),
        schedule_enabled=_switch(env, "STRIPE_PIPELINE_PRIVACY_SCHEDULE", d.schedule_enabled),
        cron=(env.get("STRIPE_PIPELINE_PRIVACY_CRON") or d.cron).strip(),
    )


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from the environment (or a given mapping, for tests)."""
    env = os.environ if env is None else env
    data_dir = Path(env.get("STRIPE_PIPELINE_DATA_DIR") or "data")
    database_url = env.get("STRIPE_PIPELINE_DATABASE_URL") or default_database_url(data_dir)

    secrets: dict[str, tuple[str, ...]] = {}
    default = split_secrets(env.get("STRIPE_WEBHOOK_SECRET"))
    if default:
        secrets[DEFAULT_ENDPOINT] = default
    prefix = "STRIPE_WEBHOOK_SECRET_"
    for key, value in env.items():
        if key.startswith(prefix) and split_secrets(value):
            name = key[len(prefix) :].lower()
            if not ENDPOINT_NAME.match(name) or name in RESERVED_ENDPOINTS:
                raise ConfigError(f"{key}: endpoint name {name!r} is not allowed")
            secrets[name] = split_secrets(value)

    livemode_raw = (env.get("STRIPE_WEBHOOK_LIVEMODE") or "").strip().lower()
    if livemode_raw not in ("", "live", "test"):
        raise ConfigError("STRIPE_WEBHOOK_LIVEMODE must be 'live' or 'test'")
    livemode = None if not livemode_raw else livemode_raw == "live"

    return Settings(
        database_url=database_url,
        data_dir=data_dir,
        webhook_secrets=secrets,
        webhook_tolerance=_int(env, "STRIPE_WEBHOOK_TOLERANCE", 300),
        webhook_max_bytes=_int(env, "STRIPE_WEBHOOK_MAX_BYTES", 1024 * 1024),
        webhook_read_timeout=_positive(env, "STRIPE_WEBHOOK_READ_TIMEOUT", 10.0),
        webhook_livemode=livemode,
        invalid_requests_per_minute=_int(env, "STRIPE_WEBHOOK_INVALID_LIMIT", 120),
        stripe_api_key=env.get("STRIPE_API_KEY") or None,
        stripe_api_base=env.get("STRIPE_API_BASE") or None,
        log_level=(env.get("STRIPE_PIPELINE_LOG_LEVEL") or "INFO").upper(),
    )
