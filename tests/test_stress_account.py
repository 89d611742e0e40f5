"""The stress ledger counts like Jepsen's queue checker, with commits inside claims."""

from __future__ import annotations

from mqcontract_conformance.stress.account import Ledger


def _ledger(*keys: str) -> Ledger:
    ledger = Ledger()
    for i, key in enumerate(keys, start=1):
        ledger.attempted.add(key)
        ledger.sent[key] = i
        ledger.delivered("q", i, key, 1)
    return ledger


def _process(ledger: Ledger, key: str, consumer: int = 0, *, accepted: bool = True) -> None:
    ledger.committed(key, consumer)
    ledger.ack_outcome(consumer, "q", ledger.sent[key], accepted)


def test_a_clean_run_is_ok() -> None:
    ledger = _ledger("a", "b")
    _process(ledger, "a")
    _process(ledger, "b")
    account = ledger.account(provider="memory")
    assert account.ok
    assert (account.sent, account.acked, account.processed, account.lost) == (2, 2, 2, 0)
    assert account.to_dict()["provider"] == "memory"
    assert account.to_dict()["ok"] is True


def test_a_message_never_processed_is_lost_unless_it_is_still_queued() -> None:
    ledger = _ledger("a", "b", "c")
    _process(ledger, "a")
    ledger.unfinished.add("b")
    account = ledger.account()
    assert (account.lost, account.unfinished) == (1, 1)
    assert account.examples["lost"] == ["c"]
    assert not account.ok


def test_work_confirmed_twice_is_duplicated() -> None:
    ledger = _ledger("a")
    _process(ledger, "a", 0)
    _process(ledger, "a", 1)
    account = ledger.account(faulted=True)
    assert (account.duplicated, account.acked_twice, account.reprocessed) == (1, 1, 0)
    assert not account.ok


def test_work_redone_after_a_failed_ack_is_at_least_once_under_faults_only() -> None:
    for stale_first in (True, False):
        ledger = _ledger("a")
        if stale_first:
            _process(ledger, "a", 0, accepted=False)  # the connection died with the ack
            _process(ledger, "a", 1)
        else:
            _process(ledger, "a", 1)
            _process(ledger, "a", 0, accepted=False)  # a claim lost earlier, told late
        account = ledger.account(faulted=True)
        assert (account.duplicated, account.reprocessed, account.failed_acks) == (0, 1, 1)
        assert account.ok
        assert not ledger.account(faulted=False).ok  # without faults no claim may be lost


def test_two_consumers_confirmed_for_one_message_is_a_duplicate() -> None:
    ledger = _ledger("a")
    ledger.committed("a", 0)
    ledger.committed("a", 1)  # held twice at once
    ledger.ack_outcome(0, "q", 1, True)
    ledger.ack_outcome(1, "q", 1, True)
    assert ledger.account().duplicated == 1


def test_an_ack_without_a_commit_loses_the_message() -> None:
    ledger = _ledger("a")
    ledger.ack_outcome(0, "q", 1, True)  # acked by a handler that overran its claim
    account = ledger.account()
    assert (account.lost, account.acked_unprocessed) == (1, 1)


def test_unknown_sends_are_recovered_when_they_turn_up_and_strangers_are_unexpected() -> None:
    ledger = _ledger("a")
    _process(ledger, "a")
    ledger.attempted.add("maybe")
    ledger.indeterminate.add("maybe")
    ledger.delivered("q", 7, "maybe", 1)
    ledger.committed("maybe", 0)
    ledger.delivered("q", 8, "stranger", 3)
    account = ledger.account()
    assert (account.indeterminate, account.recovered, account.unexpected) == (1, 1, 1)
    assert account.max_redelivery == 2
    assert not account.ok
