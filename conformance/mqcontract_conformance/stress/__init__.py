"""Load, loss accounting and faults: ``mqcontract stress``.

N producers and M event-system consumers, random handler failures and visibility
expiries, optional faults (listener, pool, connection, PostgreSQL restart on a private
cluster), and a Jepsen-style account at the end: sent, acked, lost, duplicated,
unexpected, max redelivery. See :mod:`mqcontract_conformance.stress.account` for what each count
means. With ``--cluster 3`` the run starts a private 3-node cluster (RabbitMQ quorum queues,
NATS JetStream) and can kill the queue's leader or partition it off; the account then
carries the promise stated before the run, the fault timeline, and whether it held.

As in ``bench/``, modules other packages use are public (``account``: the account and its
JSON format; ``cli``: the subcommand; ``clusters``: what a private cluster must offer) and
the rest are private.
"""

from __future__ import annotations

from mqcontract_conformance.stress._faults import FAULTS
from mqcontract_conformance.stress._load import StressSettings, run_stress
from mqcontract_conformance.stress.account import Account, Ledger

__all__ = ["FAULTS", "Account", "Ledger", "StressSettings", "run_stress"]
