"""Credentials written into URLs: redacted wherever text is shown, moved out before use.

A user may type ``s3://KEY:SECRET@bucket/prefix``. Such a URL must never reach Prefect (flow
run parameters, state messages, logs and events are all stored in its database) nor MLflow,
stderr or the manifests in the store, because every one of them is readable by more people,
for longer, than the shell that held the secret.

Chosen behaviour (docs/store.md, "Credentials"): an ``s3://`` URL's user-info is *moved*: the key and
secret go into this process's ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, which s3fs,
botocore, child processes and Dask/Ray workers read, and the URL carries on as
``s3://bucket/prefix``. User-info in any other URL is *refused* with a sentence that names the
variables to use instead. Whatever text could still hold such a URL (an error on stderr, a
log line) goes through :func:`redact` first.
"""

from __future__ import annotations

import os
import re
from typing import Any

# scheme://user[:password]@host... An AWS secret may hold '/', so after "key:" the user-info runs
# to the '@'; without a ':' it stops at the first '/', so an '@' in a path is left alone.
_USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)(?P<userinfo>[^/@\s'\":]+:[^@\s'\"]+|[^/@\s'\"]+)@", re.I)
REDACTED = "***"

# What each scheme reads its credentials from, for the refusal's advice.
_ADVICE = {
    "s3": "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)",
    "http": "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (for an MLflow server)",
    "https": "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (for an MLflow server)",
    "gs": "GOOGLE_APPLICATION_CREDENTIALS",
    "gcs": "GOOGLE_APPLICATION_CREDENTIALS",
    "az": "AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY",
    "abfs": "AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY",
}


class CredentialsInURLError(ValueError):
    """A URL carries user-info that Syllabus cannot move out of it."""


def redact(text: str) -> str:
    """``text`` with the user-info of every URL in it replaced by ``***``."""
    return _USERINFO.sub(rf"\g<scheme>{REDACTED}@", text)


def redact_value(value: Any) -> Any:
    """:func:`redact` applied to every string inside lists, tuples and mappings."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(v) for v in value)
    return value


def has_credentials(url: str) -> bool:
    return bool(_USERINFO.match(url.strip()))


def split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """``s3://KEY:SECRET@bucket/p`` -> ``("s3://bucket/p", {"key": KEY, "secret": SECRET})``
    (fsspec's S3 storage options); a URL without user-info comes back unchanged with ``{}``.
    User-info in a URL of any other scheme raises :class:`CredentialsInURLError`."""
    match = _USERINFO.match(url.strip())
    if not match:
        return url, {}
    scheme = match.group("scheme")[:-3].lower()
    clean = url.strip()[: match.start("userinfo")] + url.strip()[match.end():]
    key, sep, secret = match.group("userinfo").partition(":")
    if scheme not in ("s3", "s3a") or not sep or not key or not secret:
        advice = _ADVICE.get(scheme, "the environment variables or profile of that service")
        raise CredentialsInURLError(
            f"the URL {redact(url)} carries credentials, which would be stored in Prefect, MLflow and the logs; "
            f"give {clean} and pass the credentials in {advice}"
        )
    from urllib.parse import unquote

    return clean, {"key": unquote(key), "secret": unquote(secret)}


def adopt_credentials(url: str) -> str:
    """The URL without its credentials, which move into this process's environment (where
    s3fs, botocore and the workers this process starts read them). Refuses what it cannot
    move (see :func:`split_credentials`)."""
    clean, options = split_credentials(url)
    if options:
        os.environ["AWS_ACCESS_KEY_ID"] = options["key"]
        os.environ["AWS_SECRET_ACCESS_KEY"] = options["secret"]
        # A session token belongs to other keys; keeping it would make every request fail.
        os.environ.pop("AWS_SESSION_TOKEN", None)
    return clean


def adopt_all(value: Any) -> Any:
    """:func:`adopt_credentials` on every URL string inside lists, tuples and mappings."""
    if isinstance(value, str):
        return adopt_credentials(value) if has_credentials(value) else value
    if isinstance(value, dict):
        return {k: adopt_all(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(adopt_all(v) for v in value)
    return value
