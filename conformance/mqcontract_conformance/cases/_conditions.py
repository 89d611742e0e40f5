"""Conditions several rules share, named once (see :mod:`..applicability`)."""

from __future__ import annotations

from mqcontract.capabilities import PushKind
from mqcontract_conformance.applicability import Applies

__all__ = ["ANY_PUSH", "CLAIMED_PUSH", "FULL_PUSH", "MIXED_PUSH"]

#: Some kind of push: ``subscribe`` works.
ANY_PUSH = ~Applies.push(PushKind.NONE)
#: Push that can hand over whole messages.
FULL_PUSH = Applies.push(PushKind.FULL, PushKind.MIXED)
#: Whole messages pushed, and held (claimed) by the subscriber until acked.
CLAIMED_PUSH = FULL_PUSH & Applies.flag("pushed_messages_claimed")
#: Mixed push with the threshold its switch happens at.
MIXED_PUSH = Applies.push(PushKind.MIXED) & Applies.is_set("push_payload_threshold_bytes")
