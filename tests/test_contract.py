"""The contract against every reference provider: the matrix CI gates on.

The providers come from ``--mq-provider`` (pyproject's addopts lists the four reference
providers, and ``--mq-allow-unavailable`` so that a machine without PostgreSQL or
RabbitMQ still runs the rest). A provider whose backend is unreachable is skipped with
the URL it tried, or fails when ``--mq-require-backends`` /
``MQCONTRACT_REQUIRE_BACKENDS=1`` is set (CI).
"""

from __future__ import annotations

from mqcontract_conformance.contract import test_contract

__all__ = ["test_contract"]
