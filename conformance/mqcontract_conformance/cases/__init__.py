"""The contract's cases, one module per rule group; importing registers every rule."""

from mqcontract_conformance.cases import (  # noqa: F401
    ack,
    delay,
    delivery,
    errors,
    events,
    hostile,
    lifecycle,
    model,
    ordering,
    receive,
    send,
    visibility,
)
