"""Credentials out of everything clfops records or shows: the one place that knows what a secret looks like.

Every URI scheme clfops accepts carries its credentials in the userinfo (postgresql://USER:PW@HOST/DB,
mysql+pymysql://…, http(s)://USER:PW@HOST, s3://KEY:SECRET@BUCKET/…) or in a query parameter
(?password=…, ?X-Amz-Signature=…). `redact_uri` hides those as ***; `redact_text` redacts every URI found
in free text (a log line, a YAML file, a shell command) and also any secret this process has seen or holds
in its environment, so a password that reaches text without its URI (a driver's error) is hidden too.

The sinks call it, so no call site can forget: Tracker params/tags, `safe_files.atomic_write_text` (every
run-dir file, reports, summaries), a `logging.Filter` on clfops' log handlers (train.log, the console), the
HTML report and the checkpoint's config. The real value lives only in the process environment or the user's
own config file. Sweeps store the redacted tracking URI in their study: the rendering must stay stable
(USER:***@HOST, as SQLAlchemy renders a hidden password).
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "***"
# scheme://rest up to whitespace, a quote or an HTML/Markdown delimiter
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")
_SECRET_QUERY = re.compile(r"(?i)([?&][^=&#]*(?:pass|pwd|secret|token|signature|credential)[^=&#]*=)[^&#]*")
# Environment variables whose values are secrets wherever they appear (MLflow, S3, `clfops server --auth`).
_SECRET_ENV = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "AWS_SECRET_ACCESS_KEY", "CLFOPS_ADMIN_PASSWORD")
_URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
# A literal secret is masked in free text only from this length on: a 2-letter password hidden in every
# word would garble logs, and inside a URI it is redacted whatever its length.
_MIN_LITERAL = 6
_seen: set[str] = set()


def split_userinfo(uri: str) -> tuple[str, str | None, str | None]:
    """(uri without USER:PW@, user, password); the user and password percent-decoded; (uri, None, None)
    when the URI has no userinfo."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri, None, None
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at:
        return uri, None, None
    user, colon, password = userinfo.partition(":")
    bare = urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment))
    return bare, unquote(user) or None, unquote(password) if colon else None


def redact_uri(uri: str) -> str:
    """`uri` with its password (userinfo) and secret query values replaced by ***; anything else unchanged."""
    if "://" not in uri:
        return uri
    out = uri
    try:
        parts = urlsplit(uri)
    except ValueError:  # e.g. an unbalanced [ in the host: mask everything between :// and the last @
        return re.sub(r"://[^/]*@", f"://{MASK}@", uri)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if at and colon and password != MASK:
        _remember(password)
        out = urlunsplit((parts.scheme, f"{user}:{MASK}@{hostport}", parts.path, parts.query, parts.fragment))
    return _SECRET_QUERY.sub(lambda m: m.group(1) + MASK, out)


def redact_text(text: str) -> str:
    """Every URI in `text` redacted, and every known secret (seen in a URI, or in the environment) masked."""
    if "://" in text:
        text = _URI.sub(lambda m: redact_uri(m.group(0)), text)
    for secret in sorted(_secrets(), key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_obj(obj: Any) -> Any:
    """A copy of a nest of dicts/lists/tuples with every string redacted (a config, checkpoint metadata)."""
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, dict):
        return {k: redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact_obj(v) for v in obj)
    return obj


def is_redacted(uri: str | None) -> bool:
    """True for a URI as clfops records it with a hidden password (USER:***@HOST)."""
    return bool(uri) and f":{MASK}@" in str(uri)


class RedactFilter(logging.Filter):
    """Formats the record's message once, redacted: a log handler never sees a credential."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_FILTER = RedactFilter()


def install_log_filter(*targets: logging.Logger | logging.Handler) -> None:
    """Add the one RedactFilter to each logger/handler (idempotent). A logger filter covers records logged
    on it directly (every `logging.getLogger("clfops")` call); a handler filter covers all that reach it."""
    for target in targets:
        if _FILTER not in target.filters:
            target.addFilter(_FILTER)


def _remember(password: str) -> None:
    for form in (password, unquote(password)):
        if len(form) >= _MIN_LITERAL:
            _seen.add(form)


def _secrets() -> set[str]:
    found = set(_seen)
    for name in _SECRET_ENV:
        value = os.environ.get(name, "")
        if len(value) >= _MIN_LITERAL:
            found.add(value)
    for name in _URI_ENV:
        _, _, password = split_userinfo(os.environ.get(name, ""))
        if password and len(password) >= _MIN_LITERAL:
            found.add(password)
    return found
