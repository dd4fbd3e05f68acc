"""The console notifier: prints what Slack would show, for the demo and local runs.

It delivers every event, channel or not, as the terminal text of the very
message the Slack notifier would post (`messages.preview`), so what a user sees
in `canaryctl demo` is what their owners would read.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import IO

from controller.notify.base import Notification, Receipt, Thread
from controller.notify.messages import preview


class ConsoleNotifier:
    """Writes each notification to `stream` (stdout), one block of text per event.

    `show`, when given, is handed each notification and its text instead (the
    demo frames them in its own terminal output).
    """

    name = "console"

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        width: int = 72,
        show: Callable[[Notification, str], None] | None = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.width = width
        self.show = show
        self._lock = threading.Lock()

    def deliver(self, note: Notification, thread: Thread | None, *, retry: bool) -> Receipt:
        text = preview(note, width=self.width)
        with self._lock:  # one event's lines together, whichever thread prints
            if self.show is not None:
                self.show(note, text)
            else:
                self.stream.write(f"{text}\n\n")
                self.stream.flush()
        return Receipt()
