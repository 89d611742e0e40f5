"""The ledger a stress run keeps, and the Jepsen-style account made from it.

Messages are identified by the key in their payload, not by id, so a send whose outcome
was unknown (a connection error) can still be recognised when it turns up.

A **commit** is a handler success inside a valid claim: the handler finished before its
visibility timeout (a handler that overran does not commit: its message was rightly
handed to someone else). After a commit the consumer acks; the ack is *accepted* (the
provider confirmed it) or *failed* (not held any more, or a connection error).

* **sent**: sends the provider confirmed; **indeterminate**: sends whose outcome is
  unknown (a connection error, the bound running out, or a batch the broker refused:
  they may or may not exist); **recovered**: indeterminate ones that
  turned up after all.
* **processed**: confirmed messages committed at least once; **acked**: confirmed
  messages with an accepted ack.
* **lost**: confirmed, never committed, and not in the queue when the run ended (a
  message removed by an ack without a commit is lost: ``acked_unprocessed``).
* **unfinished**: confirmed, never committed, still in the queue at the end.
* **duplicated**: committed by two handlers whose acks were both accepted — the provider
  confirmed the same work done twice (it handed out a message it had confirmed acked, or
  let two consumers hold it at once). **acked_twice**: two accepted acks. Both must be 0.
* **reprocessed**: committed more than once, but every extra commit's ack failed: those
  consumers were told their work did not settle (their claim died with a connection, or
  expired), which is the at-least-once promise. Expected under faults; without faults it
  means claims were lost, so a run without faults must show 0.
* **unexpected**: processed messages that no producer ever sent.
* **redelivered_after_ack**: deliveries to a handler of a message whose ack the provider
  had already accepted: the ack was undone (say, by a failover), or the delivery was
  under way when the ack landed. Reported, not part of ``ok``: cluster promises bound it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["STRESS_FORMAT", "Account", "Ledger"]

#: The ``format`` field of an account written as JSON (read by ``mqcontract report``).
STRESS_FORMAT = "mqcontract-stress/1"


@dataclass
class _Commit:
    consumer: int
    accepted: bool | None = None  #: the ack that followed: None while unknown


@dataclass
class Ledger:
    """Everything observed during a run; :meth:`account` turns it into the counts."""

    attempted: set[str] = field(default_factory=set)
    sent: dict[str, int] = field(default_factory=dict)
    indeterminate: set[str] = field(default_factory=set)
    deliveries: Counter[str] = field(default_factory=Counter)
    commits: dict[str, list[_Commit]] = field(default_factory=dict)
    overran: Counter[str] = field(default_factory=Counter)
    acks: Counter[str] = field(default_factory=Counter)
    failed_acks: int = 0
    unfinished: set[str] = field(default_factory=set)
    unexpected: set[str] = field(default_factory=set)
    key_of: dict[tuple[str, int], str] = field(default_factory=dict)
    max_receive_count: int = 0
    injected_failures: int = 0
    slow_handlers: int = 0
    unknown_claims: int = 0
    send_errors: list[str] = field(default_factory=list)
    after_ack: Counter[str] = field(default_factory=Counter)

    def delivered(self, queue: str, msg_id: int, key: str, receive_count: int) -> None:
        """A handler started on ``key`` (claim number ``receive_count``)."""
        self.key_of[(queue, msg_id)] = key
        self.deliveries[key] += 1
        if self.acks[key]:
            self.after_ack[key] += 1
        self.max_receive_count = max(self.max_receive_count, receive_count)
        if key not in self.attempted:
            self.unexpected.add(key)

    def committed(self, key: str, consumer: int) -> None:
        """A handler of ``consumer`` succeeded on ``key`` inside its claim."""
        self.commits.setdefault(key, []).append(_Commit(consumer))

    def ack_outcome(self, consumer: int, queue: str, msg_id: int, accepted: bool) -> None:
        """An ack by ``consumer`` was accepted, or failed."""
        key = self.key_of.get((queue, msg_id), f"<id {msg_id}>")
        if accepted:
            self.acks[key] += 1
        else:
            self.failed_acks += 1
        for commit in reversed(self.commits.get(key, [])):
            if commit.consumer == consumer and commit.accepted is None:
                commit.accepted = accepted
                return

    def processed(self) -> set[str]:
        """Keys committed at least once."""
        return set(self.commits)

    def outstanding(self) -> int:
        """Confirmed sends not committed yet."""
        return len(set(self.sent) - set(self.commits))

    def _duplicated(self) -> set[str]:
        return {k for k, c in self.commits.items() if sum(1 for x in c if x.accepted) > 1}

    def account(self, *, faulted: bool = False, **extra: Any) -> Account:
        """The counts; ``faulted``: faults were injected (``extra`` is copied as it is)."""
        confirmed = set(self.sent)
        acked = set(self.acks)
        processed = self.processed()
        unfinished = (confirmed - processed) & self.unfinished
        lost = confirmed - processed - self.unfinished
        duplicated = self._duplicated()
        again = {k for k, c in self.commits.items() if len(c) > 1}
        return Account(
            sent=len(confirmed),
            indeterminate=len(self.indeterminate),
            recovered=len(self.indeterminate & (processed | self.unfinished)),
            acked=len(confirmed & acked),
            processed=len(confirmed & processed),
            lost=len(lost),
            acked_unprocessed=len(acked - processed),
            unfinished=len(unfinished),
            duplicated=len(duplicated),
            acked_twice=sum(1 for n in self.acks.values() if n > 1),
            reprocessed=len(again - duplicated),
            failed_acks=self.failed_acks,
            unexpected=len(self.unexpected),
            max_redelivery=max(self.max_receive_count - 1, 0),
            deliveries=sum(self.deliveries.values()),
            redelivered_messages=sum(1 for n in self.deliveries.values() if n > 1),
            injected_failures=self.injected_failures,
            slow_handlers=self.slow_handlers,
            overran_claims=sum(self.overran.values()),
            unknown_claims=self.unknown_claims,
            faulted=faulted,
            redelivered_after_ack=sum(self.after_ack.values()),
            examples={
                "lost": sorted(lost)[:10],
                "duplicated": sorted(duplicated)[:10],
                "reprocessed": sorted(again - duplicated)[:10],
                "acked_twice": sorted(k for k, n in self.acks.items() if n > 1)[:10],
                "unexpected": sorted(self.unexpected)[:10],
                "redelivered_after_ack": sorted(self.after_ack)[:10],
                "send_errors": self.send_errors[:5],
            },
            extra=extra,
        )


@dataclass
class Account:
    """The result of a run; ``ok`` when nothing was lost, duplicated or unexpected."""

    sent: int
    indeterminate: int
    recovered: int
    acked: int
    processed: int
    lost: int
    acked_unprocessed: int
    unfinished: int
    duplicated: int
    acked_twice: int
    reprocessed: int
    failed_acks: int
    unexpected: int
    max_redelivery: int
    deliveries: int
    redelivered_messages: int
    injected_failures: int
    slow_handlers: int
    overran_claims: int
    unknown_claims: int
    faulted: bool
    redelivered_after_ack: int
    examples: dict[str, list[str]]
    extra: dict[str, Any]

    @property
    def ok(self) -> bool:
        """Nothing lost or left over, nothing confirmed twice, nothing foreign; and without
        faults, nothing processed twice at all."""
        bad = self.lost or self.unfinished or self.duplicated or self.acked_twice
        return not (bad or self.unexpected or (self.reprocessed and not self.faulted))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping, ``ok`` included."""
        data = asdict(self)
        extra = data.pop("extra")
        return {"format": STRESS_FORMAT, "ok": self.ok, **data, **extra}
