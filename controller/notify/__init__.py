"""Notifications to model owners: Slack threads with evidence, a JSON webhook, the console.

The engine queues a message in the store's outbox in the same transaction as the
state change it reports; `DeliveryWorker` delivers the outbox in the background
to each `Notifier`, so a slow or failing sink never delays a rollback and no
message is lost or sent twice (see `worker`).

    base       Notification, Evidence, Receipt, Thread and the Notifier port
    messages   Block Kit, plain-text fallback, terminal preview, webhook JSON (pure)
    slack      SlackNotifier on slack-sdk's WebClient: one thread per rollout
    webhook    WebhookNotifier: one JSON POST per event
    console    ConsoleNotifier: prints the Slack message as terminal text
    worker     DeliveryWorker and the DeliveryStore port it needs (Backoff: controller.backoff)
"""

from controller.backoff import Backoff
from controller.notify.base import (
    CellNote,
    Evidence,
    Notification,
    Notifier,
    Receipt,
    Thread,
)
from controller.notify.console import ConsoleNotifier
from controller.notify.messages import (
    SlackMessage,
    notification_json,
    preview,
    slack_message,
    status_message,
    terminal_text,
)
from controller.notify.slack import SlackNotifier
from controller.notify.webhook import WebhookNotifier
from controller.notify.worker import DeliveryStore, DeliveryWorker

__all__ = [
    "Backoff",
    "CellNote",
    "ConsoleNotifier",
    "DeliveryStore",
    "DeliveryWorker",
    "Evidence",
    "Notification",
    "Notifier",
    "Receipt",
    "SlackMessage",
    "SlackNotifier",
    "Thread",
    "WebhookNotifier",
    "notification_json",
    "preview",
    "slack_message",
    "status_message",
    "terminal_text",
]
