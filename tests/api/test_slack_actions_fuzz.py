"""`/slack/actions` never crashes: fuzzed bodies, headers and payloads (hypothesis).

Whatever arrives, the answer is one of 200 (a known action), 400 (what is wrong
with it), 401 (not Slack's signature) or 405, never a 500, and nothing the
endpoint runs afterwards logs an error. Unsigned or badly signed input never
gets past the signature; signed input is fuzzed in the shapes Slack uses, so
that the payload models, the button values and the modal's metadata are tried
on near misses too.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from controller.api.slack_actions import SlackActions
from controller.api.slack_buttons import AbortRef, ActionId, ButtonRef
from controller.app import ManualCommands
from controller.notify.slack import web_client
from controller.store.memory import MemoryStore
from tests.api.slack import SECRET, form, sign
from tests.notify import fake_slack
from tests.notify.fake_slack import TOKEN, FakeSlack

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass
class Errors(logging.Handler):
    """Every ERROR (or worse) logged while the endpoint runs."""

    records: list[logging.LogRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        logging.Handler.__init__(self, logging.ERROR)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __hash__(self) -> int:
        return id(self)


@dataclass
class Endpoint:
    actions: SlackActions
    store: MemoryStore
    slack: FakeSlack
    errors: Errors

    def answer(self, body: bytes, headers: dict[str, str], length: str | None = None) -> int:
        environ: dict[str, Any] = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/slack/actions",
            "CONTENT_LENGTH": str(len(body)) if length is None else length,
            "CONTENT_TYPE": headers.get("Content-Type", ""),
            "wsgi.input": io.BytesIO(body),
        }
        for name, value in headers.items():
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        statuses: list[str] = []
        self.actions(environ, lambda status, _headers, _exc=None: statuses.append(status))
        assert self.actions.wait(30)
        return int(statuses[0].split()[0])


@pytest.fixture(scope="module")
def endpoint() -> Iterator[Endpoint]:
    store = MemoryStore()
    errors = Errors()
    logging.getLogger("controller").addHandler(errors)
    with fake_slack.running() as slack:
        actions = SlackActions(
            signing_secret=SECRET,
            client=web_client(SecretStr(TOKEN), base_url=slack.base_url, timeout=2),
            store=store,
            submit=ManualCommands(store),
            response_url_prefix=slack.hooks_url,
        )
        try:
            yield Endpoint(actions, store, slack, errors)
        finally:
            actions.close()
            logging.getLogger("controller").removeHandler(errors)


@pytest.fixture
def fresh(endpoint: Endpoint) -> Endpoint:
    endpoint.errors.records.clear()
    return endpoint


header_text = st.text(st.characters(codec="latin-1"), max_size=80)


@FUZZ
@given(
    body=st.binary(max_size=2048),
    timestamp=st.one_of(st.none(), header_text, st.integers().map(str)),
    signature=st.one_of(st.none(), header_text, st.from_regex(r"v0=[0-9a-f]{64}", fullmatch=True)),
    content_type=st.one_of(st.just("application/x-www-form-urlencoded"), header_text),
    length=st.one_of(st.none(), header_text, st.integers(-5, 10**7).map(str)),
)
def test_anything_unsigned_is_refused_without_a_crash(
    fresh: Endpoint,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    content_type: str,
    length: str | None,
) -> None:
    headers = {"Content-Type": content_type}
    if timestamp is not None:
        headers["X-Slack-Request-Timestamp"] = timestamp
    if signature is not None:
        headers["X-Slack-Signature"] = signature
    digits = length is not None and length.strip().isascii() and length.strip().isdigit()
    if length is not None and digits and int(length) > len(body):
        length = str(len(body))  # a body shorter than its length would wait for the rest
    status = fresh.answer(body, headers, length)
    assert status in (400, 401)
    assert fresh.errors.records == []


@pytest.mark.parametrize("length", ["²", "٣", "1_0", "+5", " "])
def test_a_content_length_that_is_not_plain_digits_is_a_400(fresh: Endpoint, length: str) -> None:
    # "²".isdigit() is true and int("²") raises: found by the fuzz test above
    assert fresh.answer(b"", {"Content-Type": "application/x-www-form-urlencoded"}, length) == 400
    assert fresh.errors.records == []


@FUZZ
@given(body=st.binary(max_size=4096), retry=st.one_of(st.none(), st.integers(0, 5)))
def test_signed_noise_gets_a_clear_400(fresh: Endpoint, body: bytes, retry: int | None) -> None:
    status = fresh.answer(body, sign(body, retry=retry))
    assert status in (400, 401)  # 401 only for a body that is not UTF-8
    assert fresh.errors.records == []


def json_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30)
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=10), inner, max_size=3)
        ),
        max_leaves=10,
    )


refs = st.builds(
    ButtonRef,
    rollout=st.sampled_from(["llm/bot-v2", "default/x-y", "a/b"]),
    shown=st.text(min_size=1, max_size=40),
)
button_values = st.one_of(
    refs.map(ButtonRef.encode), st.text(max_size=60), json_values().map(json.dumps)
)
users = st.one_of(
    st.fixed_dictionaries(
        {
            "id": st.sampled_from(["U024BE7LH", "W0OPS0001", "U0STRANGE"]),
            "username": st.text(max_size=20),
        }
    ),
    json_values(),
)
response_urls = st.one_of(st.just("HOOKS"), st.text(max_size=40), st.none())


@st.composite
def payloads(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["block_actions", "view_submission", "shortcut", "", None]))
    payload: dict[str, Any] = {
        "type": kind,
        "user": draw(users),
        "trigger_id": draw(st.text(max_size=20)),
    }
    if draw(st.booleans()):
        action = {
            "action_id": draw(
                st.one_of(st.sampled_from([a.value for a in ActionId]), st.text(max_size=20))
            ),
            "value": draw(button_values),
            "type": "button",
            "action_ts": "1548426417.840180",
        }
        payload["actions"] = draw(st.one_of(st.just([action]), st.lists(json_values(), max_size=2)))
        payload["response_url"] = draw(response_urls)
        payload["container"] = draw(
            st.one_of(
                st.just({"type": "message", "message_ts": "1.2", "channel_id": "C0BOT0001"}),
                json_values(),
            )
        )
    if draw(st.booleans()):
        metadata = draw(
            st.one_of(
                st.builds(
                    AbortRef, button=refs, channel=st.just("C0BOT0001"), message_ts=st.just("1.2")
                ).map(AbortRef.encode),
                st.text(max_size=40),
            )
        )
        payload["view"] = {
            "callback_id": draw(st.sampled_from(["canary_abort", "other", ""])),
            "private_metadata": metadata,
            "state": {
                "values": {
                    "reason": {
                        "reason": {
                            "type": "plain_text_input",
                            "value": draw(st.one_of(st.none(), st.text(max_size=30))),
                        }
                    }
                }
            },
        }
    extra = draw(st.dictionaries(st.text(max_size=8), json_values(), max_size=3))
    return {**extra, **payload}


@FUZZ
@given(payload=payloads(), retry=st.one_of(st.none(), st.integers(0, 3)))
def test_signed_payloads_in_slacks_shapes_are_answered_200_or_400(
    fresh: Endpoint, payload: dict[str, Any], retry: int | None
) -> None:
    if payload.get("response_url") == "HOOKS":
        payload["response_url"] = f"{fresh.slack.hooks_url}actions/T1/1/x"
    body = form(payload)
    status = fresh.answer(body, sign(body, retry=retry))
    assert status in (200, 400)
    assert fresh.errors.records == []
