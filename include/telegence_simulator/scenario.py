"""Scenario files: the pydantic schema, loading by name or path, and clear validation errors.

A scenario describes one simulated carrier: its accounts, how fast activations and static IP
provisioning progress, the static IP pools, scripted per-device outcomes and injected faults.
The same schema is accepted from YAML files and as JSON by the admin API.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"

DEFAULT_APP_ID = "demo-app-id"
DEFAULT_APP_SECRET = "demo-app-secret"  # public demo credential of the simulator

EndpointName = Literal[
    "activate",
    "activation_status",
    "service_details",
    "service_update",
    "ip_reserve",
    "ip_provision",
    "ip_status",
]
ENDPOINTS: tuple[str, ...] = (
    "activate",
    "activation_status",
    "service_details",
    "service_update",
    "ip_reserve",
    "ip_provision",
    "ip_status",
)
OutcomeKind = Literal[
    "reject_activation",
    "stay_pending",
    "ip_provision_fail",
    "ip_outside_range",
    "missing_from_ip_status",
    "service_details_404",
]
FaultKind = Literal["latency", "error", "timeout", "malformed", "drop", "answer_lost", "echo_secret"]
IpStage = Literal["profileCheck", "ipReservation", "profileUpdate"]

NonNegFloat = Annotated[float, Field(ge=0)]


class ScenarioError(ValueError):
    """A scenario could not be found, parsed or validated."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RateLimit(_Model):
    """Token bucket per account: ``per_second`` refill rate, ``burst`` bucket size."""

    per_second: float = Field(gt=0)
    burst: int | None = Field(default=None, ge=1)
    retry_after: int | None = Field(default=None, ge=0, description="fixed Retry-After; computed if unset")

    @property
    def capacity(self) -> float:
        """Bucket size (defaults to one second worth of calls, at least 1)."""
        return float(self.burst if self.burst is not None else max(1, round(self.per_second)))


class Account(_Model):
    """A carrier account (service provider credentials)."""

    app_id: str = Field(min_length=1)
    app_secret: SecretStr
    write_enabled: bool = True
    rate_limit: RateLimit | None = None

    @field_validator("app_secret")
    @classmethod
    def _secret_not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("app_secret must not be empty")
        return value


class ActivationProgress(_Model):
    """How a service moves pending -> reserved -> active/rejected.

    ``unit: seconds`` counts simulated seconds since the request was accepted (real seconds
    multiplied by the time scale); ``unit: polls`` counts status GETs of the request.
    """

    unit: Literal["seconds", "polls"] = "seconds"
    reserved_after: NonNegFloat = 1.0
    done_after: NonNegFloat = 2.0
    jitter: NonNegFloat = 0.0

    @model_validator(mode="after")
    def _ordered(self) -> ActivationProgress:
        if self.reserved_after > self.done_after:
            raise ValueError("reserved_after must be <= done_after")
        return self


class IpProgress(_Model):
    """How a static IP provisioning entry moves through profileCheck, ipReservation, profileUpdate."""

    unit: Literal["seconds", "polls"] = "seconds"
    check_after: NonNegFloat = 1.0
    reserve_after: NonNegFloat = 2.0
    done_after: NonNegFloat = 3.0
    jitter: NonNegFloat = 0.0

    @model_validator(mode="after")
    def _ordered(self) -> IpProgress:
        if not self.check_after <= self.reserve_after <= self.done_after:
            raise ValueError("need check_after <= reserve_after <= done_after")
        return self


class IpPool(_Model):
    """A finite static IP pool for one PDP name."""

    pdp_name: str = Field(min_length=1)
    cidr: str
    size: int | None = Field(default=None, ge=0, description="max addresses handed out; all hosts if unset")

    @field_validator("cidr")
    @classmethod
    def _valid_cidr(cls, value: str) -> str:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError as exc:
            raise ValueError(f"invalid CIDR {value!r}: {exc}") from exc
        return value


class Outcome(_Model):
    """A scripted outcome for the devices matched by any of the selectors."""

    kind: OutcomeKind
    iccids: list[str] = Field(default_factory=list)
    every: int | None = Field(default=None, ge=1, description="every Nth device in activation order")
    offset: int = Field(default=0, ge=0)
    iccid_suffix: list[str] = Field(default_factory=list)
    iccid_regex: str | None = None
    max_attempt: int | None = Field(default=None, ge=1, description="apply only to attempts <= N")
    error: str | None = None
    stage: IpStage = "profileUpdate"

    @field_validator("iccid_regex")
    @classmethod
    def _valid_regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _has_selector(self) -> Outcome:
        if not (self.iccids or self.every or self.iccid_suffix or self.iccid_regex):
            raise ValueError("an outcome needs at least one of iccids, every, iccid_suffix, iccid_regex")
        if self.every is not None and self.offset >= self.every:
            raise ValueError("offset must be smaller than every")
        return self


class FaultRule(_Model):
    """An injected fault on one endpoint, several endpoints or ``"*"`` (all)."""

    endpoint: EndpointName | Literal["*"] | list[EndpointName] = "*"
    kind: FaultKind
    probability: float = Field(default=1.0, ge=0, le=1)
    first_n: int | None = Field(default=None, ge=1, description="only the first N calls of the endpoint")
    iccids: list[str] = Field(
        default_factory=list,
        description="only calls whose request body names one of these ICCIDs (first_n counts those calls)",
    )
    seconds: NonNegFloat | tuple[NonNegFloat, NonNegFloat] | None = None
    status: int | list[int] = 503
    variant: Literal["truncated", "html", "wrong_shape", "empty"] = "truncated"
    mode: Literal["drop", "delay"] = "drop"

    @field_validator("status")
    @classmethod
    def _5xx(cls, value: int | list[int]) -> int | list[int]:
        values = value if isinstance(value, list) else [value]
        if not values or any(not 500 <= v <= 599 for v in values):
            raise ValueError("status must be a 5xx code or a non-empty list of 5xx codes")
        return value

    @model_validator(mode="after")
    def _needs_seconds(self) -> FaultRule:
        needs = self.kind in ("latency", "timeout") or (self.kind == "answer_lost" and self.mode == "delay")
        if needs and self.seconds is None:
            raise ValueError(f"fault kind {self.kind!r} needs 'seconds'")
        if isinstance(self.seconds, tuple) and self.seconds[0] > self.seconds[1]:
            raise ValueError("seconds range must be [min, max]")
        if self.kind != "latency" and isinstance(self.seconds, tuple):
            raise ValueError("a [min, max] range is only allowed for latency")
        return self

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The endpoint names this rule applies to."""
        if self.endpoint == "*":
            return ENDPOINTS
        if isinstance(self.endpoint, list):
            return tuple(self.endpoint)
        return (self.endpoint,)


class Scenario(_Model):
    """A complete simulated carrier."""

    name: str = "custom"
    description: str = ""
    seed: int | None = None
    accounts: list[Account] = Field(default_factory=list)
    rate_limit: RateLimit | None = None
    activation: ActivationProgress = Field(default_factory=ActivationProgress)
    ip_provisioning: IpProgress = Field(default_factory=IpProgress)
    ip_pools: list[IpPool] = Field(default_factory=list)
    outside_range_cidr: str = "192.0.2.0/24"
    mdn_start: int = Field(default=2145550000, ge=2000000000, le=9899999999)
    outcomes: list[Outcome] = Field(default_factory=list)
    faults: list[FaultRule] = Field(default_factory=list)

    @field_validator("outside_range_cidr")
    @classmethod
    def _valid_outside(cls, value: str) -> str:
        return IpPool._valid_cidr(value)

    @model_validator(mode="after")
    def _unique_names(self) -> Scenario:
        ids = [a.app_id for a in self.accounts]
        if len(ids) != len(set(ids)):
            raise ValueError("accounts: app_id values must be unique")
        pdps = [p.pdp_name for p in self.ip_pools]
        if len(pdps) != len(set(pdps)):
            raise ValueError("ip_pools: pdp_name values must be unique")
        return self

    def effective_accounts(self) -> list[Account]:
        """The configured accounts, or the default demo account when none are named."""
        if self.accounts:
            return list(self.accounts)
        return [Account(app_id=DEFAULT_APP_ID, app_secret=SecretStr(DEFAULT_APP_SECRET), write_enabled=True)]

    def public_dict(self) -> dict[str, Any]:
        """JSON-safe dump with secrets masked."""
        return self.model_dump(mode="json")


def builtin_names() -> list[str]:
    """Names of the scenario files shipped with the simulator."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


def _format_errors(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"]) or "<root>"
        lines.append(f"{loc}: {err['msg']}")
    return lines


def scenario_from_mapping(data: Any, source: str = "<scenario>") -> Scenario:
    """Validate a mapping (parsed YAML or JSON) into a :class:`Scenario`."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ScenarioError(f"{source}: a scenario must be a mapping, got {type(data).__name__}")
    try:
        return Scenario.model_validate(dict(data))
    except ValidationError as exc:
        details = "\n  - ".join(_format_errors(exc))
        raise ScenarioError(f"{source}: invalid scenario:\n  - {details}") from exc


def scenario_errors(exc: ScenarioError) -> list[str]:
    """The individual error lines of a :class:`ScenarioError` (for JSON replies)."""
    cause = exc.__cause__
    if isinstance(cause, ValidationError):
        return _format_errors(cause)
    return [str(exc)]


def resolve_scenario_path(ref: str | Path) -> Path:
    """Find a scenario by built-in name (``happy``) or by file path."""
    text = str(ref)
    candidate = SCENARIO_DIR / f"{text}.yaml"
    if "/" not in text and candidate.is_file():
        return candidate
    path = Path(text)
    if path.is_file():
        return path
    raise ScenarioError(f"scenario {text!r} not found: not a file and not one of {builtin_names()}")


def load_scenario(ref: str | Path) -> Scenario:
    """Load and validate a scenario by built-in name or YAML/JSON file path."""
    path = resolve_scenario_path(ref)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML: {exc}") from exc
    scenario = scenario_from_mapping(data, str(path))
    if scenario.name == "custom":
        scenario = scenario.model_copy(update={"name": path.stem})
    return scenario
