"""Check header regexes in the dialect of the data plane that will run them.

A policy is only valid if the proxy can run it: Envoy (every Gateway API
implementation we target, and Istio) uses RE2, which has no lookaround and no
backreferences; ingress-nginx evaluates `canary-by-header-pattern` with PCRE.
Python's `re` is neither, so each dialect is checked with its real library.
"""

from __future__ import annotations

from enum import StrEnum

import pcre2
import re2

MAX_PATTERN_LENGTH = 1024


class RegexDialect(StrEnum):
    RE2 = "re2"
    PCRE = "pcre"


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the reason is returned to the caller, not logged to stderr


def _as_text(reason: object) -> str:
    return reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)


def regex_problem(pattern: str, dialect: RegexDialect) -> str | None:
    """Why `pattern` does not compile in `dialect`, or None when it does."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"is longer than {MAX_PATTERN_LENGTH} characters"
    try:
        if dialect is RegexDialect.RE2:
            re2.compile(pattern, _RE2_OPTIONS)
        else:
            pcre2.compile(pattern)
    except Exception as exc:  # both libraries raise their own unrelated error classes
        reason = _as_text(exc.args[0] if exc.args else exc)
        if dialect is RegexDialect.RE2 and "(?" in pattern and "perl operator" in reason:
            reason += " (RE2 has no lookahead, lookbehind or backreferences)"
        return reason
    return None
