"""MODEL: programs checked step by step against a pure model of the contract.

MODEL-1 first runs every ordered pair of operation kinds (the same programs every run),
then random ones. The short profile runs in seconds per provider;
``MQCONTRACT_MODEL_PROFILE=long`` explores far more (200 programs of 50 steps). A failure
names the seed, program and timing scale that replay it (``MQCONTRACT_MODEL_SEED``,
``MQCONTRACT_MODEL_PROGRAM``, ``MQCONTRACT_TIMING_SCALE``).
"""

from __future__ import annotations

from mqcontract_conformance.cases._model_machine import run_model
from mqcontract_conformance.context import CaseContext
from mqcontract_conformance.registry import rule


@rule(
    "MODEL-1",
    "Programs of create, send, delayed send, batch send, receive (any limit and "
    "visibility timeout), fetch by id, ack and nack by id and by claim, ack_claims and "
    "passing time agree after every step with a model of the contract: the visible and "
    "held sets, which claims settle, receive counts, FIFO order with the declared requeue "
    "position, ids, and payloads (per the declared fidelity). Every ordered pair of these "
    "operations runs on every run (an ack of a claim that just lapsed, a send right after "
    "the newest message was acked), then random programs.",
    why="Single-purpose rules test one interaction at a time; bugs live in sequences "
    "nobody wrote down (a nack after an expiry, an ack racing a redelivery).",
    provisional=True,
)
async def programs_agree_with_model(ctx: CaseContext) -> None:
    await run_model(ctx, faults=False)


@rule(
    "MODEL-2",
    "The same random programs with the provider's connections severed in the middle "
    "still agree with the model: operations that failed may or may not have happened, "
    "but nothing is lost, duplicated or received while held.",
    why="Reconnects are where held messages, ids and claims get confused; the model "
    "treats failed operations as indeterminate instead of guessing.",
    provisional=True,
    hooks=("sever_connection",),
)
async def programs_survive_severed_connections(ctx: CaseContext) -> None:
    await run_model(ctx, faults=True)
