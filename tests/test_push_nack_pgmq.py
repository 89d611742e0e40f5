"""PUSH-13 on the real PGMQ: a nacked message is announced again to open subscriptions (the
nack statement NOTIFYs), and the rule fails a PGMQ provider whose nack only makes the row
visible, leaving it to the fallback poller."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from mqcontract.config import MessagingConfig
from mqcontract.errors import StaleClaim, StaleReason
from mqcontract.messages import Claim
from mqcontract.providers.pgmq import PgmqMessagingService, open_pgmq
from mqcontract.providers.pgmq._settle import claim_key
from mqcontract.service import MessagingService
from mqcontract.testing import Harness, HarnessSettings
from mqcontract_conformance.context import ContractViolation
from mqcontract_conformance.rules import get_rule
from mqcontract_conformance.runner import CaseOutcome, run_case
from mqcontract_conformance.timing import TimingProfile
from tests.pgmq_support import config


class NackWithoutAnnouncement(PgmqMessagingService):
    """Releases a nacked row as PGMQ's own ``set_vt`` would: visible, but not announced."""

    async def _nack(self, queue: str, claim: Claim) -> None:
        key = claim_key(claim)
        statement = (
            f"UPDATE pgmq.q_{queue} SET vt = clock_timestamp() WHERE msg_id = $1::bigint"
            " AND read_ct = $2::int AND (extract(epoch FROM enqueued_at) * 1000000)::bigint"
            " = $3::bigint AND vt > clock_timestamp() RETURNING msg_id"
        )

        async def work(conn: Any) -> object:
            return await conn.fetchval(statement, *key) if key is not None else None

        if await self._run(work, idempotent=False, single=True) is None:
            raise StaleClaim(queue, claim.msg_id, StaleReason.LAPSED)


def _run(url: str, cls: type[PgmqMessagingService]) -> CaseOutcome:
    """PUSH-13 against PGMQ on ``url``, each service opened as ``cls``."""

    async def factory(settings: MessagingConfig) -> MessagingService:
        service = await open_pgmq(settings)
        service.__class__ = cls  # same state, one method replaced
        return service

    run_id = uuid.uuid4().hex[:8]
    harness = Harness("pgmq", HarnessSettings(config=config(url), run_id=run_id), factory)
    return asyncio.run(run_case(harness, get_rule("PUSH-13"), TimingProfile(), run_id))


def test_pgmq_announces_a_nacked_message_again(pgmq_db_url: str) -> None:
    outcome = _run(pgmq_db_url, PgmqMessagingService)
    assert outcome.skip_reason is None


def test_a_nack_left_to_the_poller_fails_push_13(pgmq_db_url: str) -> None:
    with pytest.raises(ContractViolation, match=r"^\[PUSH-13\] received, then nacked: message"):
        _run(pgmq_db_url, NackWithoutAnnouncement)
