"""Runtime settings: the only module that reads the environment.

Every setting comes from a `CANARY_`-prefixed environment variable
(`CANARY_DATABASE_URL`, `CANARY_SLACK_TOKEN`, ...) or, for secrets, from files in
a mounted secrets directory (the way Kubernetes Secrets are mounted): a file
named `slack_token` there sets `slack_token` (`slack_signing_secret` likewise).
The directory is `CANARY_SECRETS_DIR`, or
`/var/run/secrets/canary-controller` when that exists.

Secrets are `SecretStr`: they print as `**********`, and `redacted()` gives a
view that is safe to log or show (passwords in URLs masked too).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
)

from controller.policy.gates import WebhookAllow
from controller.policy.queries import CustomQueries

DEFAULT_SECRETS_DIR = Path("/var/run/secrets/canary-controller")


class Settings(BaseSettings):
    """Everything the controller can be configured with, and its default."""

    model_config = SettingsConfigDict(
        env_prefix="CANARY_",
        env_nested_delimiter="__",
        extra="ignore",
        frozen=True,
    )

    database_url: SecretStr = Field(
        default=SecretStr("sqlite:///canary.db"),
        description="SQLAlchemy URL of the audit store; Postgres in production.",
    )
    database_connect_timeout_seconds: int = Field(
        default=5,
        ge=2,
        le=300,
        description="Longest wait to open a Postgres connection (libpq connect_timeout).",
    )
    database_statement_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="Postgres statement_timeout; the client stops waiting for any answer"
        " one second after it.",
    )
    database_keepalive_seconds: int = Field(
        default=10,
        ge=1,
        le=3600,
        description="Idle seconds before TCP keepalive probes to Postgres, and the TCP"
        " user timeout for unacknowledged data.",
    )
    database_pool_timeout_seconds: float = Field(
        default=5.0, gt=0, le=300, description="Longest wait for a free pooled connection."
    )
    tick_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="The metric queries of one tick share min(analysis.interval, this).",
    )
    tick_store_wait_seconds: float = Field(
        default=2.0,
        gt=0,
        le=300,
        description="A tick waits at most this long (and half its interval) for its lease"
        " and state before it acts from memory, toward the baseline only.",
    )
    tick_threads: int = Field(
        default=10,
        ge=1,
        le=64,
        description="Ticks that run at once: about ticks per second times a tick's"
        " seconds (its waits for Prometheus and Postgres included) (docs/deploy.md).",
    )
    prometheus_url: str = Field(
        default="http://127.0.0.1:9090", description="Base URL of the Prometheus HTTP API."
    )
    prometheus_token: SecretStr | None = Field(
        default=None, description="Bearer token sent to Prometheus, if it needs one."
    )
    prometheus_ca_file: Path | None = Field(
        default=None, description="CA bundle to verify Prometheus' TLS certificate."
    )
    prometheus_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    custom_queries: CustomQueries = Field(
        default=CustomQueries.SCOPED,
        description="Custom PromQL in policies: deny (refused), scoped (the tenant label is "
        "added to every selector; built-in templates too) or allow (run as written).",
    )
    webhook_allow: str | None = Field(
        default=None,
        description="Comma-separated URL prefixes a policy's webhook gates may call, such as "
        "https://evals.internal.example.com/hooks or http://*.evals.svc:8080; empty or unset: "
        "none (docs/gates.md).",
    )
    job_gates: bool = Field(
        default=False,
        description="Run the policies' Job gates (the Helm value gates.jobs.enabled grants the"
        " RBAC for Jobs and ConfigMaps); off: a Job gate fails, saying so.",
    )
    tenant_label: str = Field(
        default="namespace",
        pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$",
        description="The label Prometheus' scrape config puts on every series with the "
        "namespace it came from; scoped queries match it to the rollout's namespace.",
    )
    slack_token: SecretStr | None = Field(
        default=None, description="Slack bot token (xoxb-...); no Slack messages without it."
    )
    slack_base_url: str = Field(
        default="https://slack.com/api/", description="Slack Web API base URL."
    )
    slack_signing_secret: SecretStr | None = Field(
        default=None,
        description="The Slack app's signing secret: with it, messages carry buttons and"
        " POST /slack/actions takes Slack's signed interactivity requests (docs/slack.md).",
    )
    slack_actions_host: str | None = Field(
        default=None,
        description="Address of /slack/actions when slack_actions_port is set; api_host if unset.",
    )
    slack_actions_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="/slack/actions on this port, apart from the health endpoints and /metrics,"
        " for an Ingress of its own (unset: on the API port).",
    )
    slack_response_url_prefix: str = Field(
        default="https://hooks.slack.com/",
        pattern=r"^https?://[^\s]+/$",
        description="Replies go only to a response_url under this prefix (Slack's own).",
    )
    webhook_url: SecretStr | None = Field(
        default=None,
        description="URL that gets every notification as a JSON POST (docs/notifications.md);"
        " a secret, as such URLs often carry one.",
    )
    kubeconfig: Path | None = Field(
        default=None,
        description="Kubeconfig to use; when unset, kubectl's: KUBECONFIG, ~/.kube/config,"
        " then the pod's service account.",
    )
    kubeconfig_path_list: str = Field(
        default="",
        validation_alias="KUBECONFIG",
        description="kubectl's own KUBECONFIG (a path list), used when CANARY_KUBECONFIG is unset.",
    )
    namespace: str = Field(
        default="", description="Namespace to watch for ModelRollouts; empty means all."
    )
    policy_dir: Path = Field(
        default=Path("rollouts"), description="Directory source of policy files (no cluster)."
    )
    source: Literal["kubernetes", "directory"] = Field(
        default="kubernetes",
        description="Where rollouts come from: ModelRollout objects, or files in policy_dir.",
    )
    replica_id: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        description="This replica's name in the store's leases (the pod name in a cluster).",
    )
    lease_ttl_seconds: float = Field(default=15.0, gt=0, le=3600)
    sync_seconds: float = Field(default=5.0, gt=0, le=600)
    api_host: str = Field(
        default="127.0.0.1",
        description="Address of /healthz, /readyz (and /metrics unless metrics_port is set):"
        " loopback unless asked, as the endpoints have no authentication; the Helm chart sets"
        " 0.0.0.0 so kubelet and Prometheus reach the pod, behind its NetworkPolicy.",
    )
    api_port: int = Field(default=8080, ge=0, le=65535)
    metrics_host: str | None = Field(
        default=None, description="Address of /metrics when metrics_port is set; api_host if unset."
    )
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="/metrics on this port, apart from the health endpoints (unset: with them).",
    )
    dashboard_host: str | None = Field(
        default=None,
        description="Address of the read-only dashboard when dashboard_port is set; api_host"
        " if unset.",
    )
    dashboard_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Serve the read-only web dashboard on this port (unset: not served).",
    )
    log_level: str = Field(default="INFO")
    log_format: str = Field(default="json", pattern="^(json|console)$")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Secret files are named after the field alone (`slack_token`), as the keys of
        # a Kubernetes Secret would be, not with the CANARY_ prefix of the variables.
        secrets_dir = getattr(file_secret_settings, "secrets_dir", None)
        secrets = SecretsSettingsSource(settings_cls, secrets_dir=secrets_dir, env_prefix="")
        return init_settings, env_settings, secrets

    @field_validator("webhook_allow")
    @classmethod
    def _allowlist_parses(cls, value: str | None) -> str | None:
        WebhookAllow.parse(value or "")  # ValueError names the bad entry
        return value

    @property
    def webhook_allowlist(self) -> WebhookAllow:
        """`webhook_allow` parsed: the URLs a webhook gate may call (the controller's rule:
        unset allows none)."""
        return WebhookAllow.parse(self.webhook_allow or "")

    @property
    def webhook_allowlist_if_set(self) -> WebhookAllow:
        """For `canaryctl validate` and `apply` on a machine that may not know the
        operator's setting: unset means "not checked here" (a warning), not "none"."""
        configured = self.webhook_allow is not None
        return WebhookAllow.parse(self.webhook_allow or "", configured=configured)

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    def kubeconfig_files(self) -> list[Path]:
        """Where a kubeconfig is looked for, in order, as kubectl looks.

        CANARY_KUBECONFIG alone when set; else every file of KUBECONFIG (a list
        separated like PATH; kubectl merges them, the first to name something
        winning); else `~/.kube/config`. Files that do not exist are the caller's
        to skip: kubectl ignores them in KUBECONFIG.
        """
        if self.kubeconfig is not None:
            return [self.kubeconfig]
        listed = [p for p in self.kubeconfig_path_list.split(os.pathsep) if p]
        if listed:
            return [Path(p).expanduser() for p in listed]
        return [Path.home() / ".kube" / "config"]

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict that is safe to log: no secret, no URL password."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                # a webhook URL's secret is in its path or query, not a password: mask it whole
                shown = name.endswith("_url") and name != "webhook_url"
                value = redact_url(value.get_secret_value()) if shown else "***"
            elif isinstance(value, Path):
                value = str(value)
            out[name] = value
        return out


def redact_url(url: str) -> str:
    """`url` with any password replaced by `***`, for logs and error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment and the secrets directory, then `overrides`."""
    secrets_dir = os.environ.get("CANARY_SECRETS_DIR")
    if secrets_dir is None and DEFAULT_SECRETS_DIR.is_dir():
        secrets_dir = str(DEFAULT_SECRETS_DIR)
    if secrets_dir is not None:
        return Settings(_secrets_dir=secrets_dir, **overrides)
    return Settings(**overrides)
