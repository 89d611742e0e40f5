"""Credential redaction for anything that may reach an error, a log or a report.

Two layers, because a pattern alone cannot be enough: a password a user typed unencoded
(with ``/``, ``#``, ``@`` or a space in it) makes the URL ambiguous, and a driver that
rejects such a URL echoes *pieces* of it in its own error text. So every URL password
the configuration sees is remembered (with the pieces a parser could cut it into), and
:func:`redact` removes those wherever they appear, before it masks whatever still looks
like ``scheme://user:password@host`` or ``password=...``.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import unquote

__all__ = [
    "MIN_SECRET_PIECE",
    "RedactedDriverError",
    "forget_secrets",
    "redact",
    "remember_secrets",
    "scrubbed",
]

#: Pieces shorter than this are not hunted for on their own (too likely to be ordinary
#: text, too short to be worth much).
MIN_SECRET_PIECE = 4

# The userinfo of a URL, in two tries. First within the URL's own authority (RFC 3986:
# up to the first ``/``, ``?``, ``#`` or whitespace; ``;`` too), up to the ``@`` that
# is followed by a host, so ``:`` and ``@`` typed into a password are covered. Then, for
# a password typed with what ends an authority (``/``, ``#``, ``?``, a space), a
# password running past that, still within its own URL: on one line, no quote (a repr's
# boundary), no ``//`` (the next URL's ``scheme://``), no ``, `` or ``; `` (a list's or a
# sentence's separator), and only up to an ``@`` whose host has a port or a path after
# it. Without those bounds "postgresql://db:5432/x; then amqp://u:secret@h/" lost
# everything from the first URL's port to the second's host. A bare host closed by ``)``
# ends such a password only if it holds no whitespace, no ``//`` (the next URL) and does
# not start as a port and path: "(amqp://u:pw/x@host)" is a URL in parentheses;
# "postgresql://db:5432/x (owner admin@example.com)" and
# "(http://rabbit:15672/api/queues?owner=admin@corp)" are not passwords.
_USERINFO = re.compile(
    r"(?<![a-zA-Z0-9+.-])(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*)"
    r"(?:(?::[^\s/?#;]*?)?@(?=[^\s@/?#]*(?:[/\s?#'\"),;\]]|$))"
    r"|:(?:(?!//|[,;]\s)[^\n'\"])*?@(?=[^\s@/?#'\"()]+(?::[0-9]|/|$|[\s'\",;\]]))"
    r"|:(?![0-9]+/)(?:(?!//)[^\s'\"])*?@(?=[^\s@/?#'\"()]+\)))"
)
_PASSWORD_KV = re.compile(r"(?i)(password\s*=\s*)('[^']*'|\S+)")
# A scheme starts where no scheme character precedes it: tried from every letter of a long
# run instead, the search would take time quadratic in the text's length.
_URL_START = re.compile(r"(?<![a-zA-Z0-9+.-])[a-zA-Z][a-zA-Z0-9+.-]*://")

_lock = threading.Lock()
_known: set[str] = set()


def _pieces(secret: str) -> set[str]:
    """The secret, decoded, and every run of it a URL parser could cut out.

    A parser cuts at ``/ # ? @ :`` and whitespace, so any span from the start or just
    after such a character to the end or just before one may be echoed on its own.
    """
    found: set[str] = set()
    for whole in {secret, unquote(secret)}:
        cuts = [i for i, ch in enumerate(whole) if ch in "/#?@:" or ch.isspace()]
        starts = [0, *(i + 1 for i in cuts)]
        ends = [*cuts, len(whole)]
        found.update(whole[a:b].strip() for a in starts for b in ends if b > a)
    return {p for p in found if len(p) >= MIN_SECRET_PIECE}


def remember_secrets(text: str | None) -> None:
    """Remember the password of every URL in ``text``, so :func:`redact` hides it anywhere."""
    if not text:
        return
    starts = list(_URL_START.finditer(text))
    for i, start in enumerate(starts):
        # This URL ends at the line's end or where the next one starts, whichever first.
        end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        rest = text[start.end() : end].split("\n", 1)[0]
        userinfo, at, _ = rest.rpartition("@")
        if not at or ":" not in userinfo:
            continue
        user, password = userinfo.split(":", 1)
        if password == user:  # ``guest:guest``: nothing the URL does not show anyway
            continue
        with _lock:
            _known.update(_pieces(password))


def forget_secrets() -> None:
    """Forget every remembered password (for tests)."""
    with _lock:
        _known.clear()


def redact(text: str) -> str:
    """``text`` without remembered passwords, URL passwords or ``password=`` values."""
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for secret in known:
        text = text.replace(secret, "***")
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _PASSWORD_KV.sub(r"\1***", text)


class RedactedDriverError(Exception):
    """A driver's exception whose text held a secret, retold without it.

    Errors are raised ``from`` the driver's exception so its story stays visible; when
    that exception's own words quote a password, this stands in for it in the chain.
    """

    def __init__(self, original: BaseException) -> None:
        self.original_type = f"{type(original).__module__}.{type(original).__qualname__}"
        super().__init__(f"{self.original_type}: {redact(str(original))}")


def scrubbed(exc: BaseException) -> BaseException:
    """``exc`` to chain an error ``from``: itself, or a retelling if its text holds a secret."""
    if redact(str(exc)) == str(exc) and redact(repr(exc)) == repr(exc):
        return exc
    stand_in = RedactedDriverError(exc)
    stand_in.__traceback__ = exc.__traceback__  # code lines only, no values
    return stand_in
