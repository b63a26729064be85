"""TelegenceHook: the Telegence mobility API over the http provider's HttpHook and connection.

Connection (type ``telegence``, registered by this package with its own form; an ``http``
connection works too): ``host`` = base URL (``http://127.0.0.1:8089`` or a host name with
``schema`` = https), ``login`` = app-id, ``password`` = app-secret. Extras:

- ``write_enabled`` (default true): false makes the account read-only; activation is refused.
- ``paths``: overrides of the default paths (keys as in ``DEFAULT_PATHS``), or one
  ``path_<name>`` extra per path (the form's fields).
- ``timeout`` (seconds per call, default 30), ``max_attempts`` (default 5), ``backoff_initial``
  (default 1 s), ``backoff_max`` (default 60 s), ``retry_after_max`` (default 120 s).
- ``max_calls_per_second`` (absent or 0: no limit) and ``burst`` (default ``max(1, rate)``): the
  carrier rate limit shared by every task of every run. Every HTTP attempt first takes a token
  from the account's bucket in the activation database (``CarrierRateLimiter``), waiting its turn
  when the bucket is empty.

Every call is retried on connection errors, timeouts, 5xx and 429 with exponential backoff and
full jitter, honouring ``Retry-After``; other 4xx answers are returned at once. The app-secret is
sent as a header, never logged, and redacted from any text this hook hands back. Every attempt's
answer, 429, retry, malformed answer and exhausted call is counted through Airflow's Stats
(``telegence.carrier.*``, see ``telegence_activation.metrics``).
"""

from __future__ import annotations

import json
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

import requests
from airflow.providers.http.hooks.http import HttpHook
from airflow.sdk.exceptions import AirflowException
from requests.auth import AuthBase
from tenacity import (
    RetryCallState,
    Retrying,
    stop_after_attempt,
    wait_random_exponential,
)
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from telegence_activation import metrics
from telegence_activation.connection_spec import CONNECTION_FIELDS, DEFAULT_PATHS
from telegence_activation.db.connection import ACTIVATION_DB_CONN_ID
from telegence_activation.domain.activation import parse_activation_answer
from telegence_activation.domain.http import (
    is_ambiguous_status,
    is_retryable_status,
    redact,
    retry_after_seconds,
)
from telegence_activation.domain.rate_limit import (
    BURST_EXTRA,
    RATE_EXTRA,
    RateLimit,
    bucket_key,
    rate_limit_from_extras,
    wait_seconds,
)

if TYPE_CHECKING:
    import psycopg

    from telegence_activation.hooks.activation_db import ActivationDbHook

# The activation database connection that holds the rate limit's buckets, unless told otherwise.
RATE_LIMIT_DB_CONN_ID = ACTIVATION_DB_CONN_ID

# Extras this hook reads; HttpHook would otherwise send every unknown extra as a header.
_OWN_EXTRAS = frozenset(
    {
        *CONNECTION_FIELDS,
        RATE_EXTRA,
        BURST_EXTRA,
        "paths",
        "sandbox",
        *(f"path_{name}" for name in DEFAULT_PATHS),
    }
)


class TelegenceAppAuth(AuthBase):
    """Telegence's static credentials: ``app-id`` and ``app-secret`` headers on every request."""

    def __init__(self, app_id: str, app_secret: str | None) -> None:
        self.app_id = app_id
        self.app_secret = app_secret or ""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["app-id"] = self.app_id
        request.headers["app-secret"] = self.app_secret
        return request


class WriteRecorder(Protocol):
    """Write-ahead record of carrier writes: called before each HTTP attempt and with its answer.

    ``sent`` must commit before it returns (the request goes out only afterwards); if it raises, the
    request is not sent. ``answered`` completes the record; a record never completed is an attempt
    whose answer was lost.
    """

    def sent(self, method: str, path: str, body: Any, attempt: int) -> Any: ...

    def answered(self, token: Any, status: int | None, text: str, error: str | None) -> None: ...


class CarrierRateLimitUnavailable(AirflowException):
    """The rate limit's bucket could not be read (database unreachable or missing): nothing is sent
    (a limit that cannot be kept is not skipped); Airflow retries the task."""


class RateLimiter(Protocol):
    """Called before every HTTP attempt; returns once the call may go out (the seconds it waited)."""

    def acquire(self, endpoint: str | None) -> float: ...


class CarrierRateLimiter:
    """The carrier account's token bucket in the activation database, shared by every process.

    One statement per token (``repository.take_rate_token``) on this limiter's own autocommit
    connection, opened at the first take and shared by the threads of the task (psycopg serializes
    them); when the bucket is in debt the caller sleeps here, holding no lock, then sends. Waits are
    counted (``telegence.carrier.rate_limited.<endpoint>``) and timed.
    """

    def __init__(
        self,
        db_hook: ActivationDbHook,
        key: str,
        limit: RateLimit,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.key = key
        self.limit = limit
        self._db_hook = db_hook
        self._sleep = sleep
        self._lock = threading.Lock()
        self._conn: psycopg.Connection | None = None

    def _connection(self) -> psycopg.Connection:
        with self._lock:
            if self._conn is None or self._conn.closed:
                conn: psycopg.Connection = self._db_hook.get_conn()  # type: ignore[assignment]
                conn.autocommit = True
                self._conn = conn
                weakref.finalize(self, conn.close)  # a hook nobody closes still closes its connection
            return self._conn

    def acquire(self, endpoint: str | None) -> float:
        import psycopg
        from airflow.sdk.exceptions import AirflowNotFoundException

        from telegence_activation import repository as repo

        try:
            tokens, since = repo.take_rate_token(self._connection(), self.key, self.limit)
        except AirflowNotFoundException as exc:
            raise CarrierRateLimitUnavailable(
                "max_calls_per_second is set but the rate limit's database connection "
                f"{self._db_hook.activation_db_conn_id!r} does not exist; nothing sent"
            ) from exc
        except psycopg.Error as exc:
            self.close()  # a fresh connection on the next take
            raise CarrierRateLimitUnavailable(
                f"the carrier rate limit's bucket could not be read ({type(exc).__name__}); nothing sent"
            ) from exc
        wait = wait_seconds(tokens, self.limit, since)
        if wait > 0:
            metrics.carrier_rate_limited(endpoint, wait)
            self._sleep(wait)
        return wait

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class _Retryable(Exception):
    """A transient answer (5xx/429/malformed) or a transport error; carries what to report if retries run out."""

    def __init__(
        self,
        reason: str,
        wait: float | None = None,
        response: TelegenceResponse | None = None,
        *,
        ambiguous: bool,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.wait = wait
        self.response = response
        self.ambiguous = ambiguous


def _never_sent(exc: requests.RequestException) -> bool:
    """True when the request cannot have reached the carrier (no connection was made)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError) and exc.args:
        reason = getattr(exc.args[0], "reason", exc.args[0])
        return isinstance(reason, NewConnectionError | ConnectTimeoutError)
    return False


@dataclass
class TelegenceResponse:
    """A carrier answer, or the last failure after every attempt (``status`` 0 = no HTTP answer)."""

    method: str
    path: str
    status: int
    body: Any = None
    text: str = ""
    attempts: int = 1
    transient_failures: list[str] = field(default_factory=list)
    error: str | None = None
    retry_after_honoured: float = 0.0
    ambiguous: bool = False

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300 and self.error is None

    @property
    def exhausted(self) -> bool:
        """True when the call still failed transiently after the last attempt."""
        return self.error is not None

    @property
    def outcome_unknown(self) -> bool:
        """A write that failed transiently after an attempt the carrier may have applied."""
        return self.exhausted and self.ambiguous

    def describe(self) -> str:
        if self.error:
            return f"{self.method} {self.path}: {self.error} after {self.attempts} attempt(s)"
        return f"{self.method} {self.path}: HTTP {self.status} after {self.attempts} attempt(s)"


class TelegenceHook(HttpHook):
    """Interact with the Telegence mobility API.

    :param telegence_conn_id: the :ref:`http connection <howto/connection:http>` of one service
        provider's Telegence account (see module docstring for its extras).
    :param sleep: how to wait between attempts and for the rate limit (tests pass a recorder).
    :param rate_limiter: takes a token before every HTTP attempt; default: the connection's
        ``max_calls_per_second`` bucket in the database of ``rate_limit_db_conn_id``, or none.
    :param rate_limit_db_conn_id: the activation database holding the buckets (``activation_db``).
    """

    conn_name_attr = "telegence_conn_id"
    default_conn_name = "telegence_default"
    conn_type = "telegence"
    hook_name = "Telegence"

    def __init__(
        self,
        telegence_conn_id: str = default_conn_name,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rate_limiter: RateLimiter | None = None,
        rate_limit_db_conn_id: str = RATE_LIMIT_DB_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(method="GET", http_conn_id=telegence_conn_id, auth_type=TelegenceAppAuth, **kwargs)
        self.telegence_conn_id = telegence_conn_id
        self._sleep = sleep
        self._session: requests.Session | None = None
        self._given_rate_limiter = rate_limiter
        self.rate_limit_db_conn_id = rate_limit_db_conn_id

    @staticmethod
    def conn_id_for(service_provider_id: int) -> str:
        return f"telegence_sp_{service_provider_id}"

    @cached_property
    def _extras(self) -> dict[str, Any]:
        return dict(self.get_connection(self.telegence_conn_id).extra_dejson or {})

    @property
    def write_enabled(self) -> bool:
        value = self._extras.get("write_enabled", True)
        return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "y")

    @cached_property
    def secrets(self) -> list[str]:
        """What redaction removes from every answer: the connection's app-secret.

        Read once per hook (a hook serves one task instance): looking the connection up again for
        every answer cost more than the call itself at thousands of calls per task (3,000 PATCHes
        took 12.2 s with a lookup per answer, 7.0 s without; bench/results.md).
        """
        password = self.get_connection(self.telegence_conn_id).password
        return [password] if password else []

    @cached_property
    def rate_limiter(self) -> RateLimiter | None:
        """The limiter every attempt goes through (None: the connection sets no limit).

        The bucket is the account's (``bucket_key``: base URL and app-id), not the connection id's:
        two connections to one account share one bucket, as they share the carrier's limit. A bad
        ``max_calls_per_second``/``burst`` raises ``RateLimitSettingError`` (nothing is sent).
        """
        if self._given_rate_limiter is not None:
            return self._given_rate_limiter
        limit = rate_limit_from_extras(self._extras)
        if limit is None:
            return None
        from telegence_activation.hooks.activation_db import ActivationDbHook

        self._get_session()  # sets base_url from the connection, as every call does
        key = bucket_key(self.base_url, self.get_connection(self.telegence_conn_id).login)
        db_hook = ActivationDbHook(activation_db_conn_id=self.rate_limit_db_conn_id)
        return CarrierRateLimiter(db_hook, key, limit, sleep=self._sleep)

    def path(self, name: str, **args: str) -> str:
        """An API path: extra ``paths`` (a mapping) or ``path_<name>`` (a form field), else the default."""
        extras = self._extras
        template = (extras.get("paths") or {}).get(name) or extras.get(f"path_{name}") or DEFAULT_PATHS[name]
        return template.format(**{k: requests.utils.quote(str(v), safe="") for k, v in args.items()})

    def _configure_session_from_extra(
        self, session: requests.Session, connection: Any, extra_options: dict[str, Any]
    ) -> requests.Session:
        """Keep this hook's own extras out of the request headers."""
        filtered = connection
        extras = connection.extra_dejson or {}
        if _OWN_EXTRAS & set(extras):
            import copy

            filtered = copy.copy(connection)
            filtered.extra = json.dumps({k: v for k, v in extras.items() if k not in _OWN_EXTRAS})
        return super()._configure_session_from_extra(session, filtered, extra_options)

    def _get_session(self) -> requests.Session:
        if self._session is None:
            self._session = self.get_conn(headers={"Accept": "application/json"})
        return self._session

    # ------------------------------------------------------------------------------------ transport

    def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
        resend_ambiguous: bool = True,
        validate: Callable[[Any], object] | None = None,
        recorder: WriteRecorder | None = None,
        endpoint: str | None = None,
    ) -> TelegenceResponse:
        """Send one request under the retry policy; never raises for HTTP or transport failures.

        :param resend_ambiguous: retry after an answer the carrier may have applied (timeout, dropped
            connection, 5xx, malformed 2xx). False for writes the contract gives no duplicate answer
            for: such a call stops at the first ambiguous attempt and comes back ``outcome_unknown``.
        :param validate: checks a 2xx body (raises ValueError when it is not what the contract
            promises); a malformed 2xx is retried like a 5xx.
        :param recorder: write-ahead record of every attempt (see ``WriteRecorder``).
        :param endpoint: the endpoint's name in the metrics (``metrics.ENDPOINTS``; default ``other``).
        """
        extras = self._extras
        max_attempts = int(extras.get("max_attempts", 5))
        timeout = float(extras.get("timeout", 30))
        retry_after_max = float(extras.get("retry_after_max", 120))
        backoff = wait_random_exponential(
            multiplier=float(extras.get("backoff_initial", 1.0)), max=float(extras.get("backoff_max", 60.0))
        )
        failures: list[str] = []
        honoured = 0.0
        ambiguous = False
        limiter = self.rate_limiter

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, _Retryable) and exc.wait is not None:
                return min(exc.wait, retry_after_max)
            return float(backoff(state))

        def should_retry(state: RetryCallState) -> bool:
            exc = state.outcome.exception() if state.outcome else None
            return isinstance(exc, _Retryable) and (resend_ambiguous or not exc.ambiguous)

        def before_sleep(state: RetryCallState) -> None:
            nonlocal honoured
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, _Retryable) and exc.wait is not None:
                honoured += min(exc.wait, retry_after_max)  # only waits really slept count
            metrics.carrier_retry(endpoint)
            self.log.warning(
                "Telegence %s %s: %s (attempt %d of %d), retrying",
                method,
                path,
                exc,
                state.attempt_number,
                max_attempts,
            )

        def failed(reason: str, **kwargs: Any) -> _Retryable:
            nonlocal ambiguous
            failures.append(reason)
            error = _Retryable(reason, **kwargs)
            ambiguous = ambiguous or error.ambiguous
            return error

        def attempt() -> TelegenceResponse:
            session = self._get_session()
            request = requests.Request(method, self.url_from_endpoint(path), json=json_body, headers=headers)
            if limiter is not None:
                limiter.acquire(endpoint)  # its turn under the carrier's rate limit, before the record
            token = recorder.sent(method, path, json_body, len(failures) + 1) if recorder else None
            started = time.monotonic()
            try:
                raw = self.run_and_check(
                    session,
                    session.prepare_request(request),
                    # Never follow a redirect: requests would carry the app-secret header along.
                    {"timeout": timeout, "check_response": False, "allow_redirects": False},
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                reason = f"{type(exc).__name__}: {redact(str(exc), self.secrets)}"
                if recorder:
                    recorder.answered(token, None, "", reason)
                metrics.carrier_answer(
                    endpoint,
                    metrics.TIMEOUT if isinstance(exc, requests.Timeout) else metrics.CONNECTION_ERROR,
                    time.monotonic() - started,
                )
                raise failed(reason, ambiguous=not _never_sent(exc)) from exc
            text = redact(raw.text, self.secrets)
            if recorder:
                recorder.answered(token, raw.status_code, text, None)
            metrics.carrier_answer(endpoint, raw.status_code, time.monotonic() - started)
            try:  # parse the redacted text, so a secret echoed by the carrier is gone from the body too
                body = json.loads(text) if text else None
            except ValueError:
                body = None
            result = TelegenceResponse(method, path, raw.status_code, body, text)
            if is_retryable_status(raw.status_code):
                wait_for = (
                    retry_after_seconds(raw.headers.get("Retry-After")) if raw.status_code == 429 else None
                )
                raise failed(
                    f"HTTP {raw.status_code}",
                    wait=wait_for,
                    response=result,
                    ambiguous=is_ambiguous_status(raw.status_code),
                )
            if validate is not None and result.ok:
                try:
                    validate(body)
                except ValueError as exc:
                    metrics.carrier_malformed(endpoint)
                    raise failed(
                        f"malformed HTTP {raw.status_code} answer: {exc}", response=result, ambiguous=True
                    ) from exc
            return result

        retrying = Retrying(
            stop=stop_after_attempt(max_attempts),
            wait=wait,
            retry=should_retry,
            sleep=self._sleep,
            reraise=True,
            before_sleep=before_sleep,
        )
        try:
            result = retrying(attempt)
        except _Retryable as exc:
            last = exc.response or TelegenceResponse(method, path, 0)
            last.error = exc.reason
            result = last
            metrics.carrier_exhausted(endpoint)
        result.attempts = len(failures) + (0 if result.exhausted else 1)
        result.transient_failures = failures
        result.retry_after_honoured = honoured
        result.ambiguous = ambiguous
        return result

    # ------------------------------------------------------------------------------------- contract

    def activate(
        self, items: list[dict[str, Any]], *, recorder: WriteRecorder | None = None
    ) -> TelegenceResponse:
        """POST up to 200 service items for activation.

        Resent after an ambiguous answer: the carrier refuses a SIM it already has with a 409 that
        names the existing request, so a resend never activates twice.
        """
        return self.call(
            "POST",
            self.path("activate"),
            json_body=items,
            validate=parse_activation_answer,
            recorder=recorder,
            endpoint="activate",
        )

    def activation_status(self, request_id: str) -> TelegenceResponse:
        return self.call(
            "GET", self.path("activation_status", request_id=request_id), endpoint="activation_status"
        )

    def service_details(self, subscriber_number: str) -> TelegenceResponse:
        return self.call(
            "GET", self.path("service", subscriber_number=subscriber_number), endpoint="service_details"
        )

    def update_service(
        self, subscriber_number: str, body: dict[str, Any], *, recorder: WriteRecorder | None = None
    ) -> TelegenceResponse:
        """PATCH a line (removing an offering code twice removes nothing: safe to resend)."""
        return self.call(
            "PATCH",
            self.path("service", subscriber_number=subscriber_number),
            json_body=body,
            recorder=recorder,
            endpoint="service_update",
        )

    def reserve_ips(
        self, pdp_name: str, quantity: int, *, recorder: WriteRecorder | None = None
    ) -> TelegenceResponse:
        """Reserve addresses; never resent after an ambiguous answer (no query finds a lost reservation)."""
        return self.call(
            "POST",
            self.path("reserve_ips"),
            json_body={"pdpName": pdp_name, "ipQuantity": quantity},
            resend_ambiguous=False,
            recorder=recorder,
            endpoint="ip_reserve",
        )

    def submit_provisioning(
        self, body: dict[str, Any], *, recorder: WriteRecorder | None = None
    ) -> TelegenceResponse:
        """Submit a provisioning batch; never resent after an ambiguous answer (reconcile by subscriber)."""
        return self.call(
            "POST",
            self.path("provisioning"),
            json_body=body,
            resend_ambiguous=False,
            recorder=recorder,
            endpoint="ip_provision",
        )

    def provisioning_status(self, batch_id: str) -> TelegenceResponse:
        return self.call(
            "GET", self.path("provisioning_status"), headers={"batch-id": batch_id}, endpoint="ip_status"
        )

    def provisioning_status_of(self, subscriber_number: str) -> TelegenceResponse:
        """Provisioning status by subscriber number (404: nothing was ever submitted for it)."""
        return self.call(
            "GET",
            self.path("provisioning_status"),
            headers={"subscriber-number": subscriber_number},
            endpoint="ip_status",
        )
