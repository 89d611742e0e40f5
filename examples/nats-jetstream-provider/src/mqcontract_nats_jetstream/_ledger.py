"""The claims ledger: who holds each message, settled by compare-and-set.

JetStream's own acknowledgements name a message by its stream sequence only: an ack (or a
nak) sent for a delivery that has since lapsed and gone to another receiver acts on the
new receiver's delivery (nats-server ``processAckMsg``). So the claim a message is under
is kept here, one record per message on the subject ``<prefix>.c.<queue>.<seq>`` of a
stream that keeps one message per subject, and every change of holder is a publish with
``Nats-Expected-Last-Subject-Sequence``: the server stores it only if the record is
still the one the writer read. That compare-and-set is the one step that decides, for a
receiver that wants a message and a holder that wants to settle it, who wins; the ack or
nak sent to JetStream afterwards only carries out what the ledger already says.

A record is ``<state> <token> <deadline> <delivery seq>``: state ``h`` (held until the
deadline, Unix seconds), ``r`` (released by a nack) or ``s`` (settled by an ack; the
message is being deleted); the token is the delivery count of the delivery that made the
claim. The record of an acked message is purged once JetStream confirmed the ack and the
stream no longer holds the message. A record the stream still held the message for then
stays settled (a consumer leader cut off from its majority confirms acks it cannot carry
out; the message comes back, and the record makes the provider finish that delivery
instead of handing it out again); nothing purges such records later yet.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from mqcontract_nats_jetstream._errors import MESSAGE_NOT_FOUND, WRONG_LAST_SEQUENCE, JsError
from mqcontract_nats_jetstream._link import Link
from mqcontract_nats_jetstream._names import QueueNames

__all__ = ["HELD", "RELEASED", "SETTLED", "Record", "read", "write"]

HELD, RELEASED, SETTLED = "h", "r", "s"


@dataclass(frozen=True, slots=True)
class Record:
    """One message's claim state, and the ledger revision it was read at."""

    state: str
    token: int
    deadline: float
    delivery_seq: int
    revision: int = 0

    def encode(self) -> bytes:
        return f"{self.state} {self.token} {self.deadline:.6f} {self.delivery_seq}".encode()

    @classmethod
    def decode(cls, data: bytes, revision: int) -> Record:
        state, token, deadline, delivery_seq = data.decode().split()
        return cls(state, int(token), float(deadline), int(delivery_seq), revision)


async def read(link: Link, names: QueueNames, seq: int) -> Record | None:
    """The record of message ``seq``, or ``None`` if it has none."""
    try:
        reply = await link.api(
            f"STREAM.MSG.GET.{names.ledger}", {"last_by_subj": names.record(seq)}
        )
    except JsError as exc:
        if exc.err_code == MESSAGE_NOT_FOUND:
            return None
        raise
    message = reply["message"]
    return Record.decode(base64.b64decode(message["data"]), int(message["seq"]))


async def write(
    link: Link, names: QueueNames, seq: int, record: Record, expected: int
) -> int | None:
    """Store ``record`` if the ledger's revision of ``seq`` is still ``expected`` (0: no
    record); the new revision, or ``None`` if someone changed it first."""
    headers = {"Nats-Expected-Last-Subject-Sequence": str(expected)}
    try:
        ack = await link.publish_js(names.record(seq), record.encode(), headers)
    except JsError as exc:
        if exc.err_code == WRONG_LAST_SEQUENCE:
            return None
        raise
    return int(ack["seq"])


async def forget(link: Link, names: QueueNames, seq: int) -> None:
    """Drop the record of an acked message (its message is gone from the stream)."""
    await link.api(f"STREAM.PURGE.{names.ledger}", {"filter": names.record(seq)})
