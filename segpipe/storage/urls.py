"""``public_url``: the one credential stripper for every address segpipe prints, logs or records.

It takes storage URLs (``s3://``, ``https://``, local paths), MLflow tracking URIs (``postgresql://user:pw@db``,
``https://token@host``, ``sqlite:///path``) and Dask scheduler addresses (``tcp://user:pw@host:8786`` or a bare
``user:pw@host:8786``). Written by hand on purpose: ``urlsplit``/``urlunsplit`` round trips rewrite URLs they
do not need to touch (``sqlite:////abs`` loses a slash), and only the secret parts may change.
"""

from __future__ import annotations

import re

REDACTED = "***"
# A scheme, then the user information: everything up to the last "@" before the host ends ("/", "?", "#").
USER_INFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/?#]*)@")
# A bare scheduler address: [user[:password]@]host[:port], no slash anywhere.
BARE_ADDRESS = re.compile(r"^(?P<user>[^/@\s]+(?:@[^/@\s]*)*)@(?P<host>[^/@\s]+)$")
# key=value pairs in a query or a fragment whose values are secrets (presigned S3/GCS URLs, tokens, passwords).
SECRET_PAIR = re.compile(r"(?P<key>(?<=[?&;#])[^=&;#]+)=(?P<value>[^&;#]*)")
SECRET_WORDS = ("signature", "credential", "token", "password", "passwd", "secret", "session")
SECRET_NAMES = frozenset({"sig", "key", "apikey", "api_key", "access_key", "pwd", "auth", "code"})


def public_url(url: str) -> str:
    """``url`` with its secrets replaced by ``***``: the ``user:password@`` part, and secret query values.

    Examples: ``s3://AKIA:pw@bucket/k`` -> ``s3://***@bucket/k``; ``alice:pw@host:8786`` -> ``***@host:8786``;
    ``https://h/k?X-Amz-Signature=ab&x=1`` -> ``https://h/k?X-Amz-Signature=***&x=1``. Anything else, paths
    included, is returned as it is, so applying it twice gives the same text.
    """
    text = str(url)
    if "://" in text:
        text = USER_INFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text, count=1)
    else:
        text = BARE_ADDRESS.sub(lambda m: f"{REDACTED}@{m['host']}", text, count=1)
    start = min((i for i in (text.find("?"), text.find("#")) if i >= 0), default=len(text))
    return text[:start] + SECRET_PAIR.sub(_redact_pair, text[start:])


def _redact_pair(match: re.Match[str]) -> str:
    key = match["key"]
    return f"{key}={REDACTED}" if is_secret_name(key) else match[0]


def is_secret_name(name: str) -> bool:
    """Whether a query parameter called ``name`` carries a secret (``X-Amz-Signature``, ``token``, ``key``)."""
    lowered = name.lower()
    return lowered in SECRET_NAMES or any(word in lowered for word in SECRET_WORDS)
