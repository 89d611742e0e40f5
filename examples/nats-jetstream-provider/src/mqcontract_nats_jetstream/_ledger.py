"""The claims ledger: who holds each message, decided by one create per change of state.

JetStream's own acknowledgements name a message by its stream sequence only: an ack (or a
nak) sent for a delivery that has since lapsed and gone to another receiver acts on the
new receiver's delivery (nats-server ``processAckMsg``). So the claim a message is under
is kept here, in a stream that keeps one message per subject, and every change of holder
is decided by the server: the one writer whose record the server stores wins, the others
read what won and go on from there.

**Only a create decides.** A record is never overwritten. Each state has a fixed subject
for the state that ends it, ``<prefix>.c.<queue>.<seq>.<key>``, and a change of state is a
publish there with ``Nats-Expected-Last-Subject-Sequence: 0`` (store only if the subject
holds nothing). The key is ``0`` for the first claim, ``<token>h`` for what ends the claim
``token`` holds (an ack, a nack, or a later delivery taking over after its deadline) and
``<token>r`` for the claim that follows its release. Every replica checks an expected
sequence of 0 when it applies the entry, so exactly one of several competing writers wins.
An expected sequence above 0, the usual compare-and-set, is only checked by the leader
before it proposes the entry (nats-server 2.9; nats-io/nats-server#4320): in a cluster,
concurrent writers that read the same revision all win, which let two deliveries of one
message both be acked.

A record is ``<state> <token> <deadline> <delivery seq>``: state ``h`` (held until the
deadline, Unix seconds), ``r`` (released by a nack) or ``s`` (settled by an ack); the
token is the delivery count of the delivery that made the claim (above it, in the bits
from 32 up, the message's stream timestamp in ns, the same for every delivery of it), or
one past the last claim's if JetStream's count went back (tokens only grow along a
chain, so every key is written once). A message's current
state is the end of its chain, found by reading forward from the start (or from a record
already known: records never change). The records of an acked message are purged later,
once the stream no longer holds it (:mod:`._forgetting`).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from mqcontract_nats_jetstream._errors import MESSAGE_NOT_FOUND, WRONG_LAST_SEQUENCE, JsError
from mqcontract_nats_jetstream._link import Link
from mqcontract_nats_jetstream._names import QueueNames

__all__ = ["HELD", "RELEASED", "SETTLED", "Record", "at", "forget", "key_after", "read", "write"]

HELD, RELEASED, SETTLED = "h", "r", "s"
#: Bound on the records read forward in one look (a chain holds two per delivery).
MAX_CHAIN = 10_000
#: Records read one by one before jumping to the newest record of the message.
HOPS_BEFORE_JUMP = 8
#: The key of the record that starts a message's chain.
FIRST = "0"


@dataclass(frozen=True, slots=True)
class Record:
    """One message's claim state."""

    state: str
    token: int
    deadline: float
    delivery_seq: int

    @property
    def next_key(self) -> str | None:
        """Where the state that ends this one is written (``None``: settled, final)."""
        return None if self.state == SETTLED else f"{self.token}{self.state}"

    def encode(self) -> bytes:
        return f"{self.state} {self.token} {self.deadline:.6f} {self.delivery_seq}".encode()

    @classmethod
    def decode(cls, data: bytes) -> Record:
        state, token, deadline, delivery_seq = data.decode().split()
        return cls(state, int(token), float(deadline), int(delivery_seq))


async def _get(link: Link, names: QueueNames, seq: int, key: str) -> Record | None:
    try:
        reply = await link.api(
            f"STREAM.MSG.GET.{names.ledger}", {"last_by_subj": names.record(seq, key)}
        )
    except JsError as exc:
        if exc.err_code == MESSAGE_NOT_FOUND:
            return None
        raise
    return Record.decode(base64.b64decode(reply["message"]["data"]))


async def read(
    link: Link, names: QueueNames, seq: int, known: Record | None = None
) -> Record | None:
    """The current record of message ``seq`` (``None``: it has none), read forward from
    ``known``, a record of its chain read or written before, or from the start.

    A message nacked many times has a long chain: after a few records the look jumps to
    the newest record stored for the message (creates extend the chain's end, so that
    is its end, or near it if a create landed meanwhile) and reads on from there."""
    record, key = (known, known.next_key) if known is not None else (None, FIRST)
    for hop in range(MAX_CHAIN):
        if key is None:
            return record
        if hop == HOPS_BEFORE_JUMP:
            newest = await _get(link, names, seq, "*")  # one scan of the message's records
            if newest is not None:
                record, key = newest, newest.next_key
                continue
        after = await _get(link, names, seq, key)
        if after is None:
            return record
        record, key = after, after.next_key
    raise JsError(500, 0, f"the ledger of message {seq} is longer than {MAX_CHAIN} records")


def key_after(after: Record | None) -> str | None:
    """The key of the record that ends ``after`` (``None``: the first claim's key)."""
    return FIRST if after is None else after.next_key


async def at(link: Link, names: QueueNames, seq: int, key: str) -> Record | None:
    """The record stored under ``key`` for message ``seq``, if any."""
    return await _get(link, names, seq, key)


async def write(
    link: Link, names: QueueNames, seq: int, record: Record, after: Record | None
) -> bool:
    """Store ``record`` as the state that ends ``after`` (``None``: the first claim);
    false if another writer ended it first (read on from ``after`` to see how).

    A create succeeds wherever the key is free, also on a chain whose earlier records
    are gone (the queue deleted and made again, a settled chain purged): build only on a
    record just read, or checked with :func:`at` to be still where it was written."""
    key = key_after(after)
    if key is None:
        return False  # settled: nothing ends that
    headers = {"Nats-Expected-Last-Subject-Sequence": "0"}
    try:
        await link.publish_js(names.record(seq, key), record.encode(), headers)
    except JsError as exc:
        if exc.err_code in WRONG_LAST_SEQUENCE:
            return False
        raise
    return True


async def forget(link: Link, names: QueueNames, seq: int) -> None:
    """Drop every record of an acked message (its message is gone from the stream)."""
    await link.api(f"STREAM.PURGE.{names.ledger}", {"filter": names.record(seq, "*")})
