"""Settings come from CANARY_* variables and a secrets directory; secrets never print."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.settings import Settings, load_settings, redact_url


def test_defaults_run_on_embedded_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CANARY_DATABASE_URL", "CANARY_SECRETS_DIR", "CANARY_SLACK_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.database_url.get_secret_value() == "sqlite:///canary.db"
    assert settings.slack_token is None
    assert settings.namespace == ""


def test_environment_variables_use_the_canary_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANARY_DATABASE_URL", "postgresql+psycopg://u:hunter2@db/canary")
    monkeypatch.setenv("CANARY_PROMETHEUS_URL", "http://prom:9090")
    monkeypatch.setenv("CANARY_SLACK_TOKEN", "xoxb-secret-token")
    monkeypatch.setenv("CANARY_SLACK_BASE_URL", "http://127.0.0.1:8080/api/")
    monkeypatch.setenv("CANARY_KUBECONFIG", "/etc/kube/config")
    monkeypatch.setenv("CANARY_NAMESPACE", "llm")
    settings = load_settings()
    assert settings.prometheus_url == "http://prom:9090"
    assert settings.slack_base_url == "http://127.0.0.1:8080/api/"
    assert settings.kubeconfig == Path("/etc/kube/config")
    assert settings.namespace == "llm"
    assert settings.slack_token is not None
    assert settings.slack_token.get_secret_value() == "xoxb-secret-token"


def test_secrets_are_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANARY_DATABASE_URL", "postgresql+psycopg://u:hunter2@db/canary")
    monkeypatch.setenv("CANARY_SLACK_TOKEN", "xoxb-secret-token")
    settings = load_settings()
    for text in (repr(settings), str(settings), str(settings.redacted())):
        assert "hunter2" not in text
        assert "xoxb-secret-token" not in text
    assert settings.redacted()["database_url"] == "postgresql+psycopg://u:***@db/canary"
    assert settings.redacted()["slack_token"] == "***"


def test_a_webhook_url_is_a_secret_masked_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "https://hooks.example.com/services/T000/B000/s3cr3tpath"
    monkeypatch.setenv("CANARY_WEBHOOK_URL", url)
    settings = load_settings()
    assert settings.webhook_url is not None and settings.webhook_url.get_secret_value() == url
    assert settings.redacted()["webhook_url"] == "***"
    assert "s3cr3tpath" not in repr(settings) + str(settings.redacted())


def test_secrets_are_read_from_a_mounted_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "slack_token").write_text("xoxb-from-file")
    (tmp_path / "database_url").write_text("postgresql+psycopg://u:pw@db/canary")
    monkeypatch.setenv("CANARY_SECRETS_DIR", str(tmp_path))
    monkeypatch.delenv("CANARY_SLACK_TOKEN", raising=False)
    monkeypatch.delenv("CANARY_DATABASE_URL", raising=False)
    settings = load_settings()
    assert settings.slack_token is not None
    assert settings.slack_token.get_secret_value() == "xoxb-from-file"
    assert settings.database_url.get_secret_value().endswith("@db/canary")


def test_bad_values_are_rejected_with_the_field_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANARY_LOG_LEVEL", "LOUD")
    with pytest.raises(ValueError, match="log_level"):
        load_settings()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        pytest.param("sqlite:///canary.db", "sqlite:///canary.db", id="no-password"),
        pytest.param("postgresql://u:p@h:5432/d", "postgresql://u:***@h:5432/d", id="password"),
        pytest.param("postgresql://:p@h/d", "postgresql://:***@h/d", id="no-user"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_settings_are_frozen() -> None:
    with pytest.raises(ValueError, match="frozen"):
        Settings().namespace = "x"  # type: ignore[misc]
