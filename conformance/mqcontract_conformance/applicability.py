"""When a rule applies: one value that both decides and states the condition.

A rule's condition is built from a few leaves over :class:`Capabilities` fields, combined
with ``&`` and ``~``::

    Applies.push(PushKind.FULL, PushKind.MIXED) & Applies.flag("pushed_messages_claimed")

The same tree answers :meth:`Applies.applies` and renders the text ``RULES.md`` shows
under "Applies when" and a skip gives as its reason, so the two cannot disagree. Leaves
name real fields (checked when the rule is defined), and each renders the field it reads.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass

from mqcontract.capabilities import Capabilities, PushKind

__all__ = ["Applies"]

#: Field name -> its annotation (``from __future__ import annotations``: text).
_FIELDS = {f.name: str(f.type) for f in dataclasses.fields(Capabilities)}


class Applies(abc.ABC):
    """A condition on a provider's declared capabilities."""

    @abc.abstractmethod
    def applies(self, caps: Capabilities) -> bool:
        """Whether a provider declaring ``caps`` is held to the rule."""

    @abc.abstractmethod
    def text(self) -> str:
        """The condition in words, as ``RULES.md`` and skip reasons state it."""

    @abc.abstractmethod
    def fields(self) -> frozenset[str]:
        """The capability fields the decision reads (each is named by :meth:`text`)."""

    def __str__(self) -> str:
        return self.text()

    def __and__(self, other: Applies) -> Applies:
        parts = [p for c in (self, other) for p in (c.parts if isinstance(c, _All) else (c,))]
        kept = tuple(p for p in parts if not isinstance(p, _Always))
        if not kept:
            return _Always()
        return kept[0] if len(kept) == 1 else _All(kept)

    def __invert__(self) -> Applies:
        return self.inner if isinstance(self, _Not) else _Not(self)

    @staticmethod
    def always() -> Applies:
        """Every provider."""
        return _Always()

    @staticmethod
    def push(*kinds: PushKind) -> Applies:
        """Providers whose ``push`` is one of ``kinds``."""
        if not kinds:
            raise ValueError("Applies.push needs at least one PushKind")
        return _Push(tuple(k for k in PushKind if k in kinds))

    @staticmethod
    def flag(name: str) -> Applies:
        """Providers that declare the boolean capability ``name`` true."""
        if _FIELDS.get(name) != "bool":
            raise ValueError(f"Applies.flag: {name!r} is not a boolean capability")
        return _Flag(name)

    @staticmethod
    def is_set(name: str) -> Applies:
        """Providers that give the optional capability ``name`` a value (not None)."""
        if "None" not in _FIELDS.get(name, ""):
            raise ValueError(f"Applies.is_set: {name!r} is not an optional capability")
        return _IsSet(name)


@dataclass(frozen=True)
class _Always(Applies):
    def applies(self, caps: Capabilities) -> bool:
        return True

    def text(self) -> str:
        return "always"

    def fields(self) -> frozenset[str]:
        return frozenset()


@dataclass(frozen=True)
class _Push(Applies):
    kinds: tuple[PushKind, ...]

    def applies(self, caps: Capabilities) -> bool:
        return caps.push in self.kinds

    def text(self) -> str:
        if len(self.kinds) == 1:
            return f"push == {self.kinds[0].value}"
        return f"push in ({', '.join(k.value for k in self.kinds)})"

    def fields(self) -> frozenset[str]:
        return frozenset({"push"})


@dataclass(frozen=True)
class _Flag(Applies):
    name: str

    def applies(self, caps: Capabilities) -> bool:
        return bool(getattr(caps, self.name))

    def text(self) -> str:
        return self.name

    def fields(self) -> frozenset[str]:
        return frozenset({self.name})


@dataclass(frozen=True)
class _IsSet(Applies):
    name: str

    def applies(self, caps: Capabilities) -> bool:
        return getattr(caps, self.name) is not None

    def text(self) -> str:
        return f"{self.name} is set"

    def fields(self) -> frozenset[str]:
        return frozenset({self.name})


@dataclass(frozen=True)
class _Not(Applies):
    inner: Applies

    def applies(self, caps: Capabilities) -> bool:
        return not self.inner.applies(caps)

    def text(self) -> str:
        inner = self.inner
        if isinstance(inner, _Push):
            if len(inner.kinds) == 1:
                return f"push != {inner.kinds[0].value}"
            return f"push not in ({', '.join(k.value for k in inner.kinds)})"
        if isinstance(inner, _IsSet):
            return f"{inner.name} is not set"
        if isinstance(inner, _Always):
            return "never"
        return f"not ({inner})" if isinstance(inner, _All) else f"not {inner}"

    def fields(self) -> frozenset[str]:
        return self.inner.fields()


@dataclass(frozen=True)
class _All(Applies):
    parts: tuple[Applies, ...]

    def applies(self, caps: Capabilities) -> bool:
        return all(p.applies(caps) for p in self.parts)

    def text(self) -> str:
        return " and ".join(p.text() for p in self.parts)

    def fields(self) -> frozenset[str]:
        return frozenset().union(*(p.fields() for p in self.parts))
