"""A generic JSON webhook: the same events as Slack, for any other tool.

Each event is one `POST` of `notification_json(...)` (schema
`canary-controller/notification/v1`) with `Content-Type: application/json`.
Delivery is at least once: a retry after a lost answer sends the same body
again, with the same `Idempotency-Key` header (the outbox key), so a receiver
that keeps the keys it has seen drops the repeat.

The URL may carry a secret (many webhook URLs do, in the path or the query), so
it is a `SecretStr` and errors name only its scheme and host. 2xx is delivered;
408, 425, 429 and 5xx are retried (honouring `Retry-After` in seconds); any
other status is permanent, as are URLs that cannot be parsed.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from controller import __version__
from controller.errors import PermanentError, TransientError
from controller.notify.base import Notification, Receipt, Thread
from controller.notify.messages import notification_json
from controller.telemetry import redact

#: statuses worth another try
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class WebhookNotifier:
    """POSTs every event as JSON to one URL."""

    def __init__(
        self,
        url: SecretStr,
        *,
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
        name: str = "webhook",
    ) -> None:
        parts = urlsplit(url.get_secret_value())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PermanentError("the webhook URL must be an absolute http(s) URL")
        self.url = url
        self.timeout = timeout
        self.headers = dict(headers or {})
        self.name = name
        self._where = f"{parts.scheme}://{parts.hostname}" + (
            f":{parts.port}" if parts.port else ""
        )

    def deliver(self, note: Notification, thread: Thread | None, *, retry: bool) -> Receipt:
        body = json.dumps(notification_json(note), separators=(",", ":")).encode()
        request = urllib.request.Request(
            self.url.get_secret_value(),
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": f"canary-controller/{__version__}",
                "Idempotency-Key": note.dedupe_key,
                **self.headers,
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
                return Receipt(ref=response.headers.get("X-Request-Id"))
        except urllib.error.HTTPError as exc:
            exc.close()  # its body is not needed, and an unclosed one leaks a socket
            raise self._status_error(exc.code, exc.headers) from exc
        except OSError as exc:  # URLError, timeouts, refused connections
            reason = getattr(exc, "reason", exc)
            raise TransientError(
                redact(f"webhook {self._where}: no answer ({type(exc).__name__}: {reason})")
            ) from exc

    def _status_error(self, status: int, headers: Any) -> TransientError | PermanentError:
        if status in RETRY_STATUSES:
            retry_after = _seconds(headers.get("Retry-After") if headers else None)
            return TransientError(f"webhook {self._where}: HTTP {status}", retry_after=retry_after)
        return PermanentError(f"webhook {self._where}: HTTP {status}")


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: fall back to the worker's backoff
