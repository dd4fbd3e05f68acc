"""What the Kubernetes layer reads and writes: JSON objects, their kinds, merge patches,
and the record of each write.

Pure data and functions (no client import), so the routers' in-memory twin, the
executor and the audit use them without a cluster.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

JsonObject = dict[str, Any]


@dataclass(frozen=True)
class Kind:
    """A Kubernetes resource type, as the API paths and the messages name it."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def core(self) -> bool:
        """In the core API group (`/api/v1`: ConfigMaps, Events, Secrets)."""
        return not self.group

    @property
    def resource(self) -> str:
        """`plural.group`, the way RBAC rules and kubectl name a resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def ref(self, namespace: str, name: str) -> str:
        return f"{self.kind} {namespace}/{name}"


INGRESS = Kind("networking.k8s.io", "v1", "ingresses", "Ingress")
HTTP_ROUTE = Kind("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")
VIRTUAL_SERVICE = Kind("networking.istio.io", "v1", "virtualservices", "VirtualService")
DESTINATION_RULE = Kind("networking.istio.io", "v1", "destinationrules", "DestinationRule")
JOB = Kind("batch", "v1", "jobs", "Job")
CONFIG_MAP = Kind("", "v1", "configmaps", "ConfigMap")
EVENT = Kind("", "v1", "events", "Event")
SECRET = Kind("", "v1", "secrets", "Secret")
#: served by every API server: a 404 is a missing object, never a missing API
BUILT_IN = frozenset({JOB, CONFIG_MAP, EVENT, SECRET})


class Verb(StrEnum):
    CREATE = "create"
    PATCH = "patch"
    DELETE = "delete"


@dataclass(frozen=True)
class Write:
    """One write to the cluster, for the audit trail and the logs."""

    verb: Verb
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.verb} {self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class Reconciled:
    """The outcome of `Cluster.reconcile`: the write made (if any) and the object now."""

    write: Write | None
    object: JsonObject | None


def merge_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> JsonObject:
    """The JSON merge patch (RFC 7386) that turns `current` into `desired`; {} if equal.

    Lists are replaced whole, as the API server does for merge patches; a key
    missing from `desired` becomes `null`, which deletes it.
    """
    patch: JsonObject = {}
    for key in current:
        if key not in desired:
            patch[key] = None
    for key, want in desired.items():
        have = current.get(key)
        if isinstance(want, Mapping) and isinstance(have, Mapping):
            sub = merge_patch(have, want)
            if sub:
                patch[key] = sub
        elif key not in current or have != want:
            patch[key] = copy.deepcopy(want)
    return patch
