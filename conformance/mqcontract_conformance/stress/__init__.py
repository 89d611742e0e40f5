"""Load, loss accounting and faults: ``mqcontract stress``.

N producers and M event-system consumers, random handler failures and visibility
expiries, optional faults (listener, pool, connection, PostgreSQL restart on a private
cluster), and a Jepsen-style account at the end: sent, acked, lost, duplicated,
unexpected, max redelivery. See :mod:`mqcontract_conformance.stress.account` for what each count
means.
"""

from __future__ import annotations

from mqcontract_conformance.stress.account import Account, Ledger
from mqcontract_conformance.stress.load import StressSettings, run_stress

__all__ = ["Account", "Ledger", "StressSettings", "run_stress"]
