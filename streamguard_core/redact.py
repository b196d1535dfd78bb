"""Keep secrets out of what StreamGuard writes: JSON artefacts, logs, error messages.

Two nets, both by *value* (a key name such as ``token_env`` says nothing about its value):

* patterns of well-known credentials: AWS access key ids (``AKIA...``, ``ASIA...``) and
  ``aws_secret_access_key=...`` pairs, GitHub tokens (``ghp_...``, ``gho_``/``ghu_``/``ghs_``/
  ``ghr_``, ``github_pat_...``), Slack tokens (``xox?-...``), Slack and Discord webhook URLs,
  user:password in URLs, credential query parameters (``token=``, ``api_key=``, ``sig=``,
  ``X-Amz-Signature=`` ...) and ``Bearer`` tokens;
* the values of secret-looking environment variables present right now (``GITHUB_TOKEN``,
  ``AWS_SECRET_ACCESS_KEY``, ``NVD_API_KEY``, ``STREAMGUARD_API_TOKEN``, ``*_WEBHOOK_URL`` ...,
  at least :data:`MIN_SECRET_CHARS` long), whatever they look like.

:func:`~streamguard_core.io.atomic_write_json` passes everything through :func:`redact_value`, so
``exp_config.json``, ``run_status.json``, metrics, model cards, summaries and reports built
from them cannot carry a secret; :class:`RedactingFilter` does the same for a log handler, and
the CLI redacts the error line it prints. Data files (records, predictions, rejects) are not
rewritten: a hard-coded key in a C function is training data.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "***"
MIN_SECRET_CHARS = 8
"""Shorter environment values are not redacted (``true``, ``1``, a region name ...)."""

# Environment variable names whose values are secrets: a word of the name (split on _).
SECRET_ENV_NAME = re.compile(
    r"(?:^|_)(?:SECRET|PASSWORD|PASSWD|PASS|TOKEN|CREDENTIALS?|PRIVATE|ACCESS_KEY|API_KEY|APIKEY"
    r"|AUTH|WEBHOOK|DSN|PAT|KEY|SIGNATURE|COOKIE)(?:_|$)",
    re.IGNORECASE,
)

# (pattern, replacement): the replacement keeps what says what was there, not the secret.
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # AWS access key ids (long-term AKIA, temporary ASIA, and the other documented prefixes)
    (re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b"), REDACTED),
    # an AWS secret key next to its name (a bare 40-character string could be a git sha)
    (
        re.compile(
            r"((?:aws_?)?secret_?access_?key[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9/+=]{40}",
            re.IGNORECASE,
        ),
        r"\1" + REDACTED,
    ),
    # GitHub tokens: classic (ghp_ gho_ ghu_ ghs_ ghr_) and fine-grained (github_pat_)
    (re.compile(r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{20,255}\b"), REDACTED),
    (re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,255}"), REDACTED),
    # Slack bot/user/app tokens
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), REDACTED),
    # webhook URLs: the path is the secret
    (
        re.compile(r"(https?://hooks\.slack\.com/)(?:services|workflows|triggers)/[^\s\"'<>]+"),
        r"\1" + REDACTED,
    ),
    (
        re.compile(r"(https?://(?:[\w-]+\.)?discord(?:app)?\.com/api/webhooks/)[^\s\"'<>]+"),
        r"\1" + REDACTED,
    ),
    # user:password@ in any URL
    # (one slash too: pathlib collapses "https://u:p@h" to "https:/u:p@h")
    (
        re.compile(r"(\b[a-z][a-z0-9+.-]*:/{1,2})[^/\s:@\"'<>]+:[^/\s@\"'<>]+@"),
        r"\1" + REDACTED + "@",
    ),
    # credentials in query strings
    (
        re.compile(
            r"([?&](?:access_token|token|api_?key|apikey|key|sig|signature|client_secret|password"
            r"|secret|auth|x-amz-signature|x-amz-credential|x-amz-security-token)=)[^&\s\"'<>#]+",
            re.IGNORECASE,
        ),
        r"\1" + REDACTED,
    ),
    # HTTP Authorization values
    (re.compile(r"(\bBearer\s+)[A-Za-z0-9._~+/-]{16,}=*", re.IGNORECASE), r"\1" + REDACTED),
]
# cheap test first: a string none of the patterns could match is returned at once
_TRIGGER = re.compile(
    r"A[KSGIRN][A-Z]{2}[A-Z0-9]{16}|secret|gh[pousr]_|github_pat_|xox|hooks\.slack|discord|:/"
    r"|[?&]|bearer",
    re.IGNORECASE,
)


def secret_env_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of the secret-looking environment variables, longest first."""
    env = os.environ if environ is None else environ
    values = {
        value
        for name, value in env.items()
        if SECRET_ENV_NAME.search(name) and len(value) >= MIN_SECRET_CHARS
    }
    return sorted(values, key=len, reverse=True)


class Redactor:
    """Redacts text with the secret environment values of the moment it was made (read once,
    not per string) and ``extra_secrets``."""

    def __init__(self, extra_secrets: Iterable[str] = ()) -> None:
        values = {*(v for v in extra_secrets if len(v) >= MIN_SECRET_CHARS), *secret_env_values()}
        self.values = sorted(values, key=len, reverse=True)

    def text(self, text: str) -> str:
        """``text`` with every known credential replaced by ``***``."""
        if _TRIGGER.search(text) is not None:  # patterns first: they keep what it was
            for pattern, replacement in _PATTERNS:
                text = pattern.sub(replacement, text)
        for value in self.values:
            if value in text:
                text = text.replace(value, REDACTED)
        return text

    def value(self, value: Any) -> Any:
        """A JSON-like value with :meth:`text` applied to every string, keys included."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {
                (self.text(k) if isinstance(k, str) else k): self.value(v) for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value


def redact_text(text: str, extra_secrets: Iterable[str] = ()) -> str:
    """``text`` with every known credential replaced by ``***``.

    Args:
        text: any text (a log line, an error message, a URL).
        extra_secrets: more exact values to hide (e.g. a token resolved from a secret store).
    """
    return Redactor(extra_secrets).text(text)


def redact_value(value: Any, extra_secrets: Iterable[str] = ()) -> Any:
    """A JSON-like value (dicts, lists, strings ...) with :func:`redact_text` applied to every
    string, keys included; other values are returned as they are."""
    return Redactor(extra_secrets).value(value)


class RedactingFilter(logging.Filter):
    """A handler filter that redacts each record's message and traceback text.

    Usage: ``handler.addFilter(RedactingFilter())`` (a filter on a handler sees the records of
    every logger that reaches it; one on a logger would miss its children's records).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True
