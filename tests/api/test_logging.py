"""Structured logs: one JSON object per line, bound to the rollout, never carrying a secret."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from controller.settings import Settings
from controller.telemetry import (
    ConsoleFormatter,
    JsonFormatter,
    Redactor,
    bound_context,
    configure_logging,
    log_context,
    redact,
)

DB_PASSWORD = "s3cr3t-db-pass"
SLACK = "xoxb-1111-2222-abcdefABCDEF"
PROM_TOKEN = "prom-token-0123456789"


@pytest.fixture
def settings() -> Settings:
    return Settings(
        database_url=SecretStr(f"postgresql+psycopg://canary:{DB_PASSWORD}@db:5432/canary"),
        slack_token=SecretStr(SLACK),
        prometheus_token=SecretStr(PROM_TOKEN),
        log_level="DEBUG",
        log_format="json",
    )


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)
        logging.captureWarnings(False)


def capture(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    """A logger of its own that writes through `formatter` into a buffer."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"tests.logging.{id(stream)}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_has_time_level_logger_and_message() -> None:
    logger, stream = capture(JsonFormatter(Redactor()))
    logger.info("step %d passed", 2)
    (line,) = lines(stream)
    assert set(line) == {"time", "level", "logger", "message"}
    assert line["level"] == "INFO"
    assert line["logger"] == logger.name
    assert line["message"] == "step 2 passed"
    assert line["time"].endswith("Z") and "T" in line["time"]


def test_bound_context_and_extra_fields_are_merged_rollout_first() -> None:
    logger, stream = capture(JsonFormatter(Redactor()))
    with log_context(rollout="bot-v7", namespace="llm"):
        with log_context(step=2, phase="Progressing", ignored=None):
            assert bound_context() == {
                "rollout": "bot-v7",
                "namespace": "llm",
                "step": 2,
                "phase": "Progressing",
            }
            logger.info("advancing", extra={"weight": 5, "phase": "Paused"})
        logger.warning("outside the inner block")
    logger.info("outside every block")
    first, second, third = lines(stream)
    assert list(first)[:8] == [
        "time",
        "level",
        "logger",
        "message",
        "rollout",
        "namespace",
        "step",
        "phase",
    ]
    assert first["phase"] == "Paused"  # extra= wins over the bound context
    assert (first["step"], first["weight"]) == (2, 5)
    assert "step" not in second and second["rollout"] == "bot-v7"
    assert "rollout" not in third
    assert bound_context() == {}


def test_an_exception_is_structured_and_redacted() -> None:
    logger, stream = capture(JsonFormatter(Redactor([DB_PASSWORD])))
    try:
        raise ConnectionError(f"could not connect as canary:{DB_PASSWORD}")
    except ConnectionError:
        logger.exception("store unreachable")
    (line,) = lines(stream)
    assert line["error"]["type"] == "ConnectionError"
    assert line["error"]["message"] == "could not connect as canary:***"
    assert "Traceback" in line["error"]["stack"]
    assert DB_PASSWORD not in stream.getvalue()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "postgresql://canary:pa55word@db/canary",
            "postgresql://canary:***@db/canary",
            id="url-password",
        ),
        pytest.param(f"token {SLACK} rejected", "token *** rejected", id="slack-bot-token"),
        pytest.param("xapp-1-A0-123-abc and xoxp-9-8", "*** and ***", id="slack-app-user-tokens"),
        pytest.param(
            "Authorization: Bearer abc.DEF-123_x=", "Authorization: Bearer ***", id="bearer"
        ),
        pytest.param("sa token eyJhbGciOi.eyJzdWIiOiJ4In0.c2lnbmF0dXJl", "sa token ***", id="jwt"),
        pytest.param(
            "host=db password=hunter22 user=canary",
            "host=db password=*** user=canary",
            id="dsn-keyword",
        ),
        pytest.param("?api_key=abcd&x=1", "?api_key=***&x=1", id="query-string"),
        pytest.param("basic sanity checks passed", "basic sanity checks passed", id="prose"),
        pytest.param("the bearer of the verdict", "the bearer of the verdict", id="prose-2"),
        pytest.param("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic ***", id="basic"),
        pytest.param(
            "nothing secret at http://prom:9090/api",
            "nothing secret at http://prom:9090/api",
            id="untouched",
        ),
    ],
)
def test_secret_shapes_are_masked_without_being_configured(text: str, expected: str) -> None:
    assert Redactor()(text) == expected


def test_configured_secrets_are_masked_wherever_they_appear() -> None:
    redactor = Redactor([SecretStr("opaque-value-1"), "opaque", None, "ab"])
    assert redactor("x opaque-value-1 y opaque z ab") == "x *** y *** z ab"


def test_secret_values_in_extra_fields_are_masked() -> None:
    logger, stream = capture(JsonFormatter(Redactor([PROM_TOKEN])))
    logger.info(
        "configured",
        extra={
            "token": SecretStr("never-shown-1"),
            "settings": {"url": f"http://u:{PROM_TOKEN}@prom", "nested": [PROM_TOKEN]},
        },
    )
    (line,) = lines(stream)
    assert line["token"] == "***"
    assert line["settings"] == {"url": "http://u:***@prom", "nested": ["***"]}
    assert PROM_TOKEN not in stream.getvalue()
    assert "never-shown-1" not in stream.getvalue()


def test_configure_logging_writes_json_lines_without_any_secret(
    settings: Settings, restore_logging: None
) -> None:
    stream = io.StringIO()
    configure_logging(settings, stream=stream)
    log = logging.getLogger("controller.test")
    with log_context(rollout="bot-v7", namespace="llm", step=0, phase="Pending"):
        log.debug("settings: %s", settings.database_url.get_secret_value())
        log.info("slack said invalid_auth for %s", SLACK)
        log.error("prometheus refused token %s", PROM_TOKEN)
        log.info("the password alone: %s", DB_PASSWORD)
    parsed = lines(stream)
    assert [p["level"] for p in parsed] == ["DEBUG", "INFO", "ERROR", "INFO"]
    assert all(p["rollout"] == "bot-v7" and p["namespace"] == "llm" for p in parsed)
    text = stream.getvalue()
    for secret in (DB_PASSWORD, SLACK, PROM_TOKEN):
        assert secret not in text
    assert parsed[0]["message"] == "settings: ***"
    assert redact(f"later, elsewhere: {PROM_TOKEN}") == "later, elsewhere: ***"


def test_configure_logging_honours_level_and_console_format(
    settings: Settings, restore_logging: None
) -> None:
    stream = io.StringIO()
    configure_logging(settings.model_copy(update={"log_level": "WARNING"}), stream=stream)
    second = configure_logging(
        settings.model_copy(update={"log_level": "WARNING", "log_format": "console"}),
        stream=stream,
    )
    root = logging.getLogger()
    assert [h for h in root.handlers if h.get_name() == second.get_name()] == [second]
    assert isinstance(second.formatter, ConsoleFormatter)
    log = logging.getLogger("controller.test")
    log.info("dropped below the level")
    with log_context(rollout="bot-v7", namespace="llm", step=3, phase="Progressing"):
        log.warning("holding, token %s", SLACK, extra={"reason": "no data"})
    (line,) = stream.getvalue().splitlines()
    assert line.split(" ", 1)[1] == (
        "WARNING controller.test [llm/bot-v7 step=3 phase=Progressing] "
        "holding, token *** reason=no data"
    )
    assert logging.getLogger("apscheduler").level == logging.WARNING


def test_console_lines_carry_the_redacted_traceback() -> None:
    logger, stream = capture(ConsoleFormatter(Redactor()))
    try:
        raise ValueError("bad url postgresql://u:pw12345@db/x")
    except ValueError:
        logger.exception("failed")
    text = stream.getvalue()
    assert "Traceback" in text and "ValueError: bad url postgresql://u:***@db/x" in text
    assert "pw12345" not in text
