"""The harness mqcontract's suite drives this provider through, and the rules MQTT breaks.

Each run (and xdist worker) gets its own topic prefix, ``<topic_prefix>_<run id>``, so its
registry of retained markers is its own. ``setup`` checks the broker answers and reads
its version from ``$SYS``; ``teardown`` clears every marker of the run (retained
messages outlive a broker restart, so none may be left behind). Hooks:

* ``sever_connection`` / ``kill_listener``: a second client connects with the service's
  client id and takes its session over; the broker closes the service's connection, as it
  would for any network cut. The taking client acknowledges nothing and leaves the session
  in place, so the service can resume it. Push shares the service's one connection, so
  both hooks cut the same one.
* ``crash_holder`` / ``freeze_holder``: a separate process opens the provider on this
  run's prefix and tries to hold the messages (``mqcontract_fixtures``). On MQTT it
  cannot: a subscriber that joins after a message was published never receives it. The
  hook then reports that as a contract violation, bounded, instead of letting the
  holder wait out its 30 s.
* ``publish_foreign``: a raw publish with a chosen id (any MQTT client can publish any
  id onto a topic: ``producer_assigned_ids=True``).
* ``stored_ids`` and ``suppress_notifications`` are unavailable (see their reasons).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

from mqcontract.clock import VirtualClock
from mqcontract.service import MessagingService
from mqcontract.testing import Harness, HarnessSettings, HookUnavailable
from mqcontract_conformance.context import ContractViolation
from mqcontract_fixtures.holders import Opener, crash_holder, freeze_holder

from mqcontract_mqtt import __version__
from mqcontract_mqtt._config import PROVIDER_NAME, MqttConfig, endpoint, load_settings
from mqcontract_mqtt._link import Incoming, Link
from mqcontract_mqtt.service import MqttMessagingService, connect_mqtt

__all__ = ["KNOWN_BROKEN", "MqttHarness", "mqtt_harness"]

#: Bound on the harness's own calls.
PROBE_TIMEOUT = 5.0
#: The push timeout of the suite's services (PUSH-7 waits one out).
PUSH_TIMEOUT_SECONDS = 10.0
#: How long a holder process gets to receive messages sent before it joined.
HOLDER_JOIN_SECONDS = 5.0

_NO_REDELIVERY = (
    "MQTT never sends a message again while the connection that got it is alive: "
    "no visibility timeout brings it back, and a nack (which MQTT does not have) leaves "
    "it stuck, unacknowledged, with the consumer that got it"
)
_PUSHED_AWAY = (
    "MQTT hands each message to one subscriber when it is published and never moves it: "
    "a message pushed to one consumer is not receivable by another, even after the "
    "first one let go of it"
)
_LATE_JOINER = (
    "a subscriber that joins after a message was published never receives it: MQTT keeps "
    "no backlog for new consumers, so work cannot be handed to a process that starts later"
)

#: Rules MQTT QoS 1 is known to break, each with the reason in plain words.
KNOWN_BROKEN: Mapping[str, str] = {
    # A message that is not acked never comes back while its consumer is connected.
    "VT-2": f"no visibility timeout: {_NO_REDELIVERY}",
    "VT-4": f"no visibility timeout, short or long: {_NO_REDELIVERY}",
    "VT-7": f"no redelivery to check the id, payload and count of: {_NO_REDELIVERY}",
    "ORD-3": f"a nacked message never returns to any position: {_NO_REDELIVERY}",
    "ORD-4": f"an unacked message never returns after its timeout: {_NO_REDELIVERY}",
    "ACK-2": f"nack cannot make a message visible again: {_NO_REDELIVERY}",
    "ACK-5": f"after a nack the message is not available to anyone: {_NO_REDELIVERY}",
    "ACK-6": f"a nacked message is not received again: {_NO_REDELIVERY}",
    "ACK-8": f"the unacked messages of a batch never come back: {_NO_REDELIVERY}",
    "CLAIM-1": f"no second delivery, so no second claim: {_NO_REDELIVERY}",
    "CLAIM-2": "a claim never lapses: nothing in MQTT takes a message back from the consumer "
    "that got it, so an ack long after its timeout still succeeds",
    "CLAIM-4": f"a nacked message is not delivered again to settle: {_NO_REDELIVERY}",
    "CLAIM-5": f"a released message is not delivered again to settle: {_NO_REDELIVERY}",
    "CLAIM-6": f"a nacked pushed message is not pushed again: {_NO_REDELIVERY}",
    "CLAIM-9": f"the messages whose nack won are not received again: {_NO_REDELIVERY}",
    "PUSH-7": f"a pushed message that is not acked never comes back: {_NO_REDELIVERY}",
    "PUSH-12": f"a nacked pushed message is not pushed again: {_NO_REDELIVERY}",
    "PUSH-13": f"a nacked message is not pushed again: {_NO_REDELIVERY}",
    "EVT-6": f"a failed handler's message is never retried: {_NO_REDELIVERY}",
    "MODEL-1": f"the model's nack and expiry make messages visible again: {_NO_REDELIVERY}",
    "CAP-1": f"receive_count cannot be measured over nacks and an expiry: {_NO_REDELIVERY}",
    "CAP-2": f"a message held for 0.3 s never comes back: {_NO_REDELIVERY}",
    "ERR-12": "what a receive claimed just before its caller cancelled it (the call had "
    f"returned) never comes back: {_NO_REDELIVERY}",
    # A message belongs to the consumer it was pushed to.
    "CLAIM-3": f"the second consumer never gets the message: {_PUSHED_AWAY}",
    "CLAIM-10": "the second consumer never gets the messages of the queue created again "
    f"(they go to the first, still subscribed): {_PUSHED_AWAY}",
    "ERR-6": "after a network cut the broker sends the unacked message again, but only to "
    f"the session that had it, never to another consumer: {_PUSHED_AWAY}",
    # Work cannot move to a new or a surviving process.
    "ERR-8": f"a crashed consumer's messages cannot come back: {_LATE_JOINER}; and what a "
    "consumer holds when it dies stays in its session until that expires, then is dropped",
    "HOLD-1": "nothing bounds how long a frozen consumer keeps its messages: MQTT gives "
    "them to nobody else while its session lives, and drops them when it expires",
    "PUSH-17": "a service that closes ends its session, and the broker drops what it had "
    f"pushed to that service and never saw acknowledged: {_PUSHED_AWAY}",
    "PUSH-19": "a service whose subscription closed is still a member of the queue's shared "
    f"subscription, and the broker keeps handing it messages: {_PUSHED_AWAY}",
    "LIFE-14": "a service that used a queue stays a member of its shared subscription after "
    "the queue is deleted and created again: its own send goes to itself, and the other "
    f"service receives nothing: {_PUSHED_AWAY}",
    "LIFE-15": "the queues outlive the service that closes, but their messages do not: the "
    f"broker had handed them to its session, which ends with it: {_PUSHED_AWAY}",
}


class MqttHarness(Harness):
    """A fresh provider (own connection, own session) per case."""

    known_broken = KNOWN_BROKEN

    def __init__(self, name: str, settings: HarnessSettings) -> None:
        super().__init__(name, settings)
        base = load_settings(settings.config)
        run = re.sub(r"[^a-z0-9_]", "_", settings.run_id.lower())
        self.config: MqttConfig = dataclasses.replace(
            base,
            topic_prefix=f"{base.topic_prefix}_{run}",
            # PUSH-7 waits a whole push timeout out: keep it short in the suite.
            push_visibility_timeout_seconds=min(
                base.push_visibility_timeout_seconds, PUSH_TIMEOUT_SECONDS
            ),
        )
        self._facts: dict[str, str] = {}

    async def open(self, clock: VirtualClock | None = None) -> MessagingService:
        return await connect_mqtt(
            self.config, operation_timeout=self.settings.config.operation_timeout_seconds
        )

    async def setup(self) -> None:
        service = await connect_mqtt(self.config, operation_timeout=PROBE_TIMEOUT)
        try:
            self._facts = {
                "version": __version__,
                "server": await broker_version(self.config),
                "topic_prefix": self.config.topic_prefix,
            }
        finally:
            await service.close()

    async def teardown(self) -> None:
        """Clear every retained marker of this run (and so every queue)."""
        service = await connect_mqtt(self.config, operation_timeout=PROBE_TIMEOUT)
        try:
            for queue in await service.list_queues():
                await service.delete_queue(queue)
        finally:
            await service.close()

    def describe(self) -> dict[str, str]:
        return dict(self._facts)

    # -- hooks -------------------------------------------------------------------------

    @staticmethod
    def _service(service: MessagingService) -> MqttMessagingService:
        if not isinstance(service, MqttMessagingService):
            raise HookUnavailable(f"not an mqtt service: {type(service).__name__}")
        return service

    async def sever_connection(self, service: MessagingService) -> None:
        await take_over(self._service(service), self.config)

    async def kill_listener(self, service: MessagingService) -> None:
        mqtt = self._service(service)
        if not mqtt.subscription_count:
            raise HookUnavailable(f"{self.name}: kill_listener needs a subscription")
        await take_over(mqtt, self.config)

    async def suppress_notifications(
        self, service: MessagingService, queue: str
    ) -> Callable[[], Awaitable[None]]:
        raise HookUnavailable(
            f"{PROVIDER_NAME}: push is the broker delivering the message itself; no "
            "notification can be lost apart from the message"
        )

    async def crash_holder(
        self, service: MessagingService, queue: str, count: int, visibility_timeout: float
    ) -> list[int]:
        self._service(service)
        try:
            async with asyncio.timeout(HOLDER_JOIN_SECONDS):
                return await crash_holder(
                    self._opener(), self.settings.config, queue, count, visibility_timeout
                )
        except TimeoutError:
            raise _holder_got_nothing(queue, count) from None

    def freeze_holder(
        self, service: MessagingService, queue: str, count: int, visibility_timeout: float
    ) -> AbstractAsyncContextManager[list[int]]:
        self._service(service)
        return self._frozen(queue, count, visibility_timeout)

    @contextlib.asynccontextmanager
    async def _frozen(
        self, queue: str, count: int, visibility_timeout: float
    ) -> AsyncIterator[list[int]]:
        async with contextlib.AsyncExitStack() as stack:
            try:
                async with asyncio.timeout(HOLDER_JOIN_SECONDS):
                    held = await stack.enter_async_context(
                        freeze_holder(
                            self._opener(), self.settings.config, queue, count, visibility_timeout
                        )
                    )
            except TimeoutError:
                raise _holder_got_nothing(queue, count) from None
            yield held

    def _opener(self) -> Opener:
        """How a holder process opens this provider on this run's prefix."""
        return Opener(
            f"{__name__}:open_holder",
            {
                "settings": dataclasses.asdict(self.config),
                "operation_timeout": self.settings.config.operation_timeout_seconds,
            },
        )

    async def publish_foreign(
        self, service: MessagingService, queue: str, msg_id: int, payload: bytes
    ) -> None:
        await self._service(service).publish(queue, msg_id, payload)

    async def stored_ids(self, service: MessagingService, queue: str) -> list[int]:
        raise HookUnavailable(
            f"{PROVIDER_NAME}: MQTT cannot read a topic's messages without subscribing, and "
            "a subscriber takes its share of them"
        )


def _holder_got_nothing(queue: str, count: int) -> ContractViolation:
    return ContractViolation(
        f"a consumer process started after {count} messages were sent to {queue!r} "
        f"received none of them within {HOLDER_JOIN_SECONDS:g} s: {_LATE_JOINER}"
    )


async def take_over(service: MqttMessagingService, settings: MqttConfig) -> None:
    """Cut ``service``'s connection from the broker's side: connect with its client id,
    which makes the broker close the old connection, then leave with the session kept.
    Returns once the service has seen its connection close."""
    generation = service.link.generation
    thief = Link(
        endpoint(settings),
        service.client_id,
        keepalive=settings.keepalive_seconds,
        session_expiry=settings.session_expiry_seconds,
        on_message=_keep_unacknowledged,
        on_lost=lambda: None,
        connect_timeout=PROBE_TIMEOUT,
        resume=True,
    )
    try:
        await thief.connect(PROBE_TIMEOUT)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PROBE_TIMEOUT
        while service.link.connected and service.link.generation == generation:
            if loop.time() >= deadline:
                raise RuntimeError(f"the broker did not close {service.client_id}'s connection")
            await asyncio.sleep(0.01)
    finally:
        await thief.leave(PROBE_TIMEOUT)


def _keep_unacknowledged(incoming: Incoming) -> None:
    """The taking client acknowledges nothing: the session keeps every message for the
    service that resumes it."""


async def broker_version(settings: MqttConfig) -> str:
    """What the broker says it is (``$SYS/broker/version``), or ``"unknown"``."""
    got: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def heard(incoming: Incoming) -> None:
        if not got.done():
            got.set_result(incoming.payload.decode(errors="replace"))

    link = Link(
        endpoint(settings),
        f"mqc-probe-{id(got):x}",
        keepalive=settings.keepalive_seconds,
        session_expiry=0,
        on_message=heard,
        on_lost=lambda: None,
    )
    try:
        await link.connect(PROBE_TIMEOUT)
        await link.subscribe(["$SYS/broker/version"])
        async with asyncio.timeout(2.0):
            return await got
    except (OSError, TimeoutError):
        return "unknown"
    finally:
        await link.close(PROBE_TIMEOUT)


async def open_holder(settings: dict[str, Any], operation_timeout: float) -> MqttMessagingService:
    """Opens the provider in a holder process (``crash_holder``, ``freeze_holder``)."""
    return await connect_mqtt(MqttConfig(**settings), operation_timeout=operation_timeout)


def mqtt_harness(settings: HarnessSettings) -> Harness:
    """Harness factory for the ``mqtt`` entry point (``mqcontract.harnesses``)."""
    return MqttHarness(PROVIDER_NAME, settings)
