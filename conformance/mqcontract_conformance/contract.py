"""The contract test: collected with ``pytest --pyargs mqcontract_conformance.contract``.

It is one function parametrized by the plugin over ``--mq-provider`` x rules.
"""

from __future__ import annotations

from mqcontract_conformance.plugin import CaseRunner


def test_contract(mq_case: CaseRunner) -> None:
    """Run one numbered rule against one provider."""
    mq_case.run()
