"""Kubernetes objects as plain JSON: merge patches, snapshots, managed objects, regexes.

Routers handle every object as the JSON the API server returned, never as a
client model, so a field this code has never heard of (a newer Gateway API
field, another controller's extension) is carried through untouched.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from controller.errors import FencedError
from controller.kube.objects import JsonObject
from controller.policy import HeaderMatch
from controller.routing.base import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    ROUTE_LABEL,
    SNAPSHOT_ANNOTATION,
)

log = logging.getLogger(__name__)


def annotations_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict(obj.get("metadata", {}).get("annotations") or {})


def set_annotations(obj: JsonObject, values: Mapping[str, str]) -> None:
    """Set the annotations of `obj`, dropping the key when none are left (as the API does)."""
    meta = obj.setdefault("metadata", {})
    if values:
        meta["annotations"] = dict(values)
    else:
        meta.pop("annotations", None)


def read_snapshot(obj: Mapping[str, Any]) -> JsonObject | None:
    """The snapshot a router left on a route it changed, or None if it changed nothing."""
    text = annotations_of(obj).get(SNAPSHOT_ANNOTATION)
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def write_snapshot(obj: JsonObject, snapshot: Mapping[str, Any] | None) -> None:
    """Record (or, with None, remove) the snapshot on `obj`; other annotations stay as they are."""
    values = annotations_of(obj)
    if snapshot is None:
        values.pop(SNAPSHOT_ANNOTATION, None)
    else:
        values[SNAPSHOT_ANNOTATION] = json.dumps(snapshot, separators=(",", ":"))
    set_annotations(obj, values)


def original_object(
    obj: Mapping[str, Any],
    namespace: str,
    *,
    rules: str,
    match: str,
    same_match: Callable[[Any], object],
    mentions: Callable[[Mapping[str, Any], str, str], bool],
    give_back: Callable[[Mapping[str, Any], Mapping[str, Any], str], JsonObject],
    what: str,
) -> JsonObject:
    """`obj` without anything a router changed, from its snapshot: what `restore` writes.

    The one restore algorithm of the routers that edit a list of rules in place
    (an HTTPRoute's `spec.rules`, a VirtualService's `spec.http`). Each rule that
    mentions the candidate is matched, by its `match` field (compared through
    `same_match`, which fills in defaults), with a rule the snapshot saved, and
    `give_back` restores it; a cohort rule the router added is dropped; a rule to
    the candidate that nobody saved was added by someone else and is left alone.
    """
    out = copy.deepcopy(dict(obj))
    snapshot = read_snapshot(obj)
    write_snapshot(out, None)
    if snapshot is None:
        return out
    candidate = str(snapshot.get("candidate", ""))
    saved: list[Mapping[str, Any]] = list(snapshot.get("targets") or [])
    used = [False] * len(saved)
    managed = [same_match(m) for m in snapshot.get("managed") or []]
    kept = []
    for rule in (out.get("spec") or {}).get(rules) or []:
        if not mentions(rule, candidate, namespace):
            kept.append(rule)
            continue
        matches = same_match(rule.get(match))
        index = next(
            (i for i, s in enumerate(saved) if not used[i] and same_match(s.get(match)) == matches),
            None,
        )
        if index is not None:
            used[index] = True
            kept.append(give_back(rule, saved[index], candidate))
        elif matches in managed:
            continue  # a cohort rule we added
        else:
            log.warning(
                "a %s %s/%s sends traffic to %s but was not written by canary-controller as "
                "it is now; leaving it as it is",
                what,
                namespace,
                obj.get("metadata", {}).get("name"),
                candidate,
            )
            kept.append(rule)
    if "spec" in out:
        out["spec"][rules] = kept
    return out


def carried_epoch(obj: Mapping[str, Any] | None) -> int:
    """The lease epoch of the last fenced write recorded in `obj`'s snapshot (0: none)."""
    value = (read_snapshot(obj) or {}).get("epoch") if obj is not None else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def check_fence(obj: Mapping[str, Any] | None, epoch: int | None, ref: str) -> None:
    """FencedError if `obj` was written under a newer lease epoch than the writer's.

    Called inside a `reconcile` build, on the object as just read: the write that
    follows carries that object's resourceVersion, so if anyone writes in between
    the write fails with 409, the object is read again and this runs again. The
    check and the write are one atomic step on the API server.
    """
    carried = carried_epoch(obj)
    if epoch is not None and carried > epoch:
        raise FencedError(
            f"{ref} was written under lease epoch {carried}, newer than this replica's "
            f"{epoch}: another replica owns the rollout now; the write toward the "
            "candidate is refused"
        )


def epoch_token(current: Mapping[str, Any] | None, epoch: int | None) -> dict[str, int]:
    """The `epoch` entry of a snapshot written now: the writer's, or (unfenced) the one
    the object already carries, so a token never goes down."""
    kept = epoch if epoch is not None else carried_epoch(current)
    return {"epoch": kept} if kept else {}


_REGEX_SPECIALS = frozenset("\\.+*?()|[]{}^$")


def escape_regex(text: str) -> str:
    """`text` as a regex matching it literally, valid in RE2 and PCRE alike.

    Python's `re.escape` also escapes characters (`-`, `#`, `&`, space) that
    only Python needs escaped; this escapes only what both dialects treat as
    special, so the pattern reads the same in the proxy's config.
    """
    return "".join("\\" + c if c in _REGEX_SPECIALS else c for c in text)


def header_regex(match: HeaderMatch) -> str | None:
    """A regex for a prefix or regex match (None for an exact value)."""
    if match.regex is not None:
        return match.regex
    if match.prefix is not None:
        return "^" + escape_regex(match.prefix)
    return None


def owner_references(
    current: Mapping[str, Any] | None, owner: Mapping[str, Any] | None
) -> list[Any]:
    """The owner references of a managed object: the rollout's, plus any others already set."""
    refs = [
        r
        for r in (current or {}).get("metadata", {}).get("ownerReferences") or []
        if owner is None or r.get("uid") != owner.get("uid")
    ]
    return [*refs, dict(owner)] if owner is not None else refs


def child_name(parent: str, suffix: str, limit: int = 253) -> str:
    """`parent-suffix`, shortened with a hash of `parent` when it would exceed `limit`."""
    name = f"{parent}-{suffix}"
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(parent.encode()).hexdigest()[:8]
    return f"{parent[: limit - len(suffix) - 10].rstrip('-.')}-{digest}-{suffix}"


def labels(obj: Mapping[str, Any] | None) -> dict[str, str]:
    return dict((obj or {}).get("metadata", {}).get("labels") or {})


def is_managed(obj: Mapping[str, Any] | None, route: str) -> bool:
    """Whether `obj` is an object a router created for `route` (by its labels)."""
    found = labels(obj)
    return found.get(MANAGED_BY_LABEL) == MANAGED_BY and found.get(ROUTE_LABEL) == route


def managed_object(
    current: Mapping[str, Any] | None,
    *,
    api_version: str,
    kind: str,
    namespace: str,
    name: str,
    managed_labels: Mapping[str, str],
    owner: Mapping[str, Any] | None,
) -> JsonObject:
    """The object to write for a managed object: the current one (other controllers'
    labels and annotations kept) or a new skeleton, with our labels and owner reference."""
    obj: JsonObject = (
        copy.deepcopy(dict(current))
        if current is not None
        else {
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {"name": name, "namespace": namespace},
        }
    )
    meta = obj.setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), **managed_labels}
    refs = owner_references(current, owner)
    if refs:
        meta["ownerReferences"] = refs
    return obj
