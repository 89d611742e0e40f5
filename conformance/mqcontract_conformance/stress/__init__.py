"""Load, loss accounting and faults: ``mqcontract stress``.

N producers and M event-system consumers, random handler failures and visibility
expiries, optional faults (listener, pool, connection, PostgreSQL restart on a private
cluster), and a Jepsen-style account at the end: sent, acked, lost, duplicated,
unexpected, max redelivery. See :mod:`mqcontract_conformance.stress.account` for what each count
means.

As in ``bench/``, modules other packages use are public (``account``: the account and its
JSON format; ``cli``: the subcommand) and the rest are private.
"""

from __future__ import annotations

from mqcontract_conformance.stress._faults import FAULTS
from mqcontract_conformance.stress._load import StressSettings, run_stress
from mqcontract_conformance.stress.account import Account, Ledger

__all__ = ["FAULTS", "Account", "Ledger", "StressSettings", "run_stress"]
