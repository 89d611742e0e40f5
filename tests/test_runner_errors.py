"""An error the provider raises where a rule expects success fails the run, naming the
rule and the call.

Before, it surfaced as the provider's bare exception (``StaleClaim: ...``), with nothing
saying which rule it broke or which call of the rule's check made it. It is not a rule's
verdict (``ContractViolation``): a known-broken rule (a strict xfail for assertions) is
not excused by a crash, and the selftest does not count one as a catch.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mqcontract.errors import StaleClaim, StaleReason
from mqcontract.messages import Claim
from mqcontract.providers.memory import InMemoryMessagingService
from mqcontract_conformance.context import ContractViolation
from mqcontract_conformance.runner import CaseOutcome, ProviderErrorInRule

RunRule = Callable[[type[InMemoryMessagingService], str], CaseOutcome]


class AcksAlwaysStale(InMemoryMessagingService):
    """Every ack says the claim lapsed, however fresh it is."""

    async def _ack(self, queue: str, claim: Claim) -> None:
        raise StaleClaim(queue, claim.msg_id, StaleReason.LAPSED)


def test_an_unexpected_provider_error_fails_the_run_naming_the_rule_and_the_call(
    run_rule: RunRule,
) -> None:
    with pytest.raises(ProviderErrorInRule) as failed:
        run_rule(AcksAlwaysStale, "ACK-1")
    assert not isinstance(failed.value, ContractViolation | AssertionError)
    text = str(failed.value)
    assert text.startswith("[ACK-1] StaleClaim raised where the rule expects the call to")
    assert "ack.py:" in text
    assert "ack_message(q, sent)" in text
    assert "is stale (lapsed)" in text
    assert isinstance(failed.value.__cause__, StaleClaim)
