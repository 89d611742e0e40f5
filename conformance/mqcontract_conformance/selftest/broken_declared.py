"""Broken declarations: correct providers that declare less than they do.

Each behaves exactly as the in-memory provider; only its capabilities under-declare one
thing it measurably does, so the rules that would check it are skipped (or loosened)
and only the CAP rules, which measure whatever is declared, can tell.
"""

from __future__ import annotations

import dataclasses

from mqcontract.capabilities import Capabilities, PushKind
from mqcontract.providers.memory import InMemoryMessagingService
from mqcontract_conformance.selftest.catalogue import Specimen

__all__ = [
    "SPECIMENS",
    "CoarsePrecisionDeclared",
    "InexactCountsDeclared",
    "PushHiddenBehindNone",
    "PushShownAsSignal",
    "SharedBackendHidden",
]


class PushHiddenBehindNone(InMemoryMessagingService):
    """Declares no push (so no push rule runs) though subscribe pushes whole messages."""

    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(super().capabilities, push=PushKind.NONE)


class PushShownAsSignal(InMemoryMessagingService):
    """Declares signal-only push (so no full-push rule runs) though it pushes whole messages."""

    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(super().capabilities, push=PushKind.SIGNAL)


class InexactCountsDeclared(InMemoryMessagingService):
    """Declares inexact receive counts (so VT-5 is skipped) though its counts are exact."""

    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(super().capabilities, exact_receive_count=False)


class CoarsePrecisionDeclared(InMemoryMessagingService):
    """Declares a whole-second visibility precision though its timeouts are exact to the
    millisecond, so every timing rule tolerates a second of error."""

    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(super().capabilities, visibility_precision_seconds=1.0)


class SharedBackendHidden(InMemoryMessagingService):
    """Declares that its services share nothing (so no competing-consumer rule runs)
    though they share one store."""

    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(super().capabilities, shared_backend=False)


SPECIMENS: tuple[Specimen, ...] = (
    Specimen(PushHiddenBehindNone, "CAP-1"),
    Specimen(PushShownAsSignal, "CAP-1"),
    Specimen(InexactCountsDeclared, "CAP-1"),
    Specimen(CoarsePrecisionDeclared, "CAP-2"),
    Specimen(SharedBackendHidden, "CAP-1"),
)
