"""``public_url``: the one credential stripper for every address segpipe prints, logs or records.

Credentials are removed, not masked, so that the same object recorded by two runs (one given credentials in
its URL, one not) has the same public URL in lineage tags and results tables.

It takes storage URLs (``s3://``, ``https://``, local paths), MLflow tracking URIs (``postgresql://user:pw@db``,
``https://token@host``, ``sqlite:///path``) and Dask scheduler addresses (``tcp://user:pw@host:8786`` or a bare
``user:pw@host:8786``). Written by hand on purpose: ``urlsplit``/``urlunsplit`` round trips rewrite URLs they
do not need to touch (``sqlite:////abs`` loses a slash), and only the secret parts may change.
"""

from __future__ import annotations

import re

# A scheme, then the user information: everything up to the last "@" before the host ends ("/", "?", "#").
USER_INFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/?#]*)@")
# A bare scheduler address: [user[:password]@]host[:port], no slash anywhere.
BARE_ADDRESS = re.compile(r"^(?P<user>[^/@\s]+(?:@[^/@\s]*)*)@(?P<host>[^/@\s]+)$")
# key=value pairs (with the separator before them) in a query or fragment; secret ones are dropped.
SECRET_PAIR = re.compile(r"(?P<sep>[?&;#])(?P<key>[^=&;#]+)=(?P<value>[^&;#]*)")
SECRET_WORDS = ("signature", "credential", "token", "password", "passwd", "secret", "session")
SECRET_NAMES = frozenset({"sig", "key", "apikey", "api_key", "access_key", "pwd", "auth", "code"})


def public_url(url: str) -> str:
    """``url`` without its secrets: the ``user:password@`` part and secret query or fragment parameters go.

    Examples: ``s3://AKIA:pw@bucket/k`` -> ``s3://bucket/k``; ``alice:pw@host:8786`` -> ``host:8786``;
    ``https://h/k?X-Amz-Signature=ab&x=1`` -> ``https://h/k?x=1``. Anything else, paths included, is returned
    as it is, so applying it twice gives the same text.
    """
    text = str(url)
    if "://" in text:
        text = USER_INFO.sub(lambda m: m["scheme"], text, count=1)
    else:
        text = BARE_ADDRESS.sub(lambda m: m["host"], text, count=1)
    start = min((i for i in (text.find("?"), text.find("#")) if i >= 0), default=len(text))
    return text[:start] + _without_secrets(text[start:])


def _without_secrets(tail: str) -> str:
    """A query and fragment (``?a=1&token=x#f``) without its secret parameters, a separator kept per part."""
    kept = SECRET_PAIR.sub(lambda m: "" if is_secret_name(m["key"]) else m[0], tail)
    if kept == tail:
        return tail
    query, hash_mark, fragment = kept.partition("#")
    query = "?" + query.lstrip("?&;") if query.strip("?&;") else ""
    fragment = "#" + fragment.lstrip("&;") if fragment.strip("&;") else ""
    return query + (fragment if hash_mark else "")


def is_secret_name(name: str) -> bool:
    """Whether a query parameter called ``name`` carries a secret (``X-Amz-Signature``, ``token``, ``key``)."""
    lowered = name.lower()
    return lowered in SECRET_NAMES or any(word in lowered for word in SECRET_WORDS)
