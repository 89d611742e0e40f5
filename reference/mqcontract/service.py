"""The provider boundary: the protocols and the base class providers build on.

The contract in prose (the numbered rules in ``conformance/RULES.md`` are the executable
form):

* Queue names follow :func:`mqcontract.validation.check_queue_name`; a bad name raises
  ``InvalidQueueName`` before the backend is touched. ``create_queue`` and
  ``delete_queue`` are idempotent; every other operation on a missing queue raises
  ``QueueNotFound`` and never creates it.
* ``send_message`` returns an id unique within the queue and increasing for one producer.
* ``receive_messages`` claims up to ``limit`` visible messages, oldest first: each stays
  invisible to every receiver until ``visibility_timeout`` seconds pass, then comes back
  with ``receive_count`` + 1, unless it is acked (gone for good) or nacked (visible now).
* Every claimed message carries its :class:`~mqcontract.messages.Claim`. ``ack_claim``,
  ``nack_claim`` and ``ack_claims`` settle exactly that claim: one that lapsed, was
  settled, or was superseded by a later claim raises ``StaleClaim`` (a
  ``MessageNotFound``) and changes nothing. ``ack_message``/``nack_message`` (the seed's
  settlement by id) settle the live claim *this service* made for that id, with the same
  checks; any other id (unknown, already acked, already nacked, held by someone else)
  raises ``MessageNotFound`` and leaves the provider fully usable.
* Times are float seconds; sub-second values are honoured to the declared precision.
* Every failure is a ``MessagingError``; no operation blocks past its bound.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import ClassVar, Protocol, Self, TypeVar, runtime_checkable

from mqcontract._claims import ClaimBook
from mqcontract.capabilities import Capabilities, PushKind
from mqcontract.errors import (
    InvalidArgument,
    MessageNotFound,
    ProviderClosed,
    QueueNotFound,
    StaleClaim,
    UnsupportedOperation,
)
from mqcontract.messages import Claim, ClaimRef, Message, MessageNotification, QueuedMessage
from mqcontract.subscription import QueueSubscription
from mqcontract.translation import ErrorTable, Failure, await_translated
from mqcontract.validation import (
    check_claim,
    check_delay,
    check_limit,
    check_payload,
    check_queue_name,
    check_visibility_timeout,
    is_message_id,
)

__all__ = [
    "BaseMessagingService",
    "MessagingService",
    "QueueOperations",
    "Subscription",
    "SupportsPushNotifications",
]

T = TypeVar("T")
_Settlement = Callable[[str, Claim], Awaitable[None]]


@runtime_checkable
class Subscription(Protocol):
    """An async iterator of notifications that stops cleanly after :meth:`aclose`."""

    queues: tuple[str, ...]

    def __aiter__(self) -> Subscription: ...

    async def __anext__(self) -> MessageNotification: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class QueueOperations(Protocol):
    """Queue lifecycle, send, receive with a visibility timeout, ack and nack."""

    @property
    def provider_name(self) -> str: ...

    @property
    def capabilities(self) -> Capabilities: ...

    async def create_queue(self, name: str) -> None: ...

    async def delete_queue(self, name: str) -> None: ...

    async def queue_exists(self, name: str) -> bool: ...

    async def list_queues(self) -> list[str]: ...

    async def send_message(self, queue: str, payload: bytes) -> int: ...

    async def send_message_with_delay(
        self, queue: str, payload: bytes, delay_seconds: float
    ) -> int: ...

    async def send_batch(self, queue: str, payloads: Sequence[bytes]) -> list[int]: ...

    async def receive_messages(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]: ...

    async def ack_message(self, queue: str, msg_id: int) -> None: ...

    async def nack_message(self, queue: str, msg_id: int) -> None: ...

    async def ack_claim(self, queue: str, claim: ClaimRef) -> None: ...

    async def nack_claim(self, queue: str, claim: ClaimRef) -> None: ...

    async def ack_claims(self, queue: str, claims: Sequence[ClaimRef]) -> list[bool]: ...

    async def close(self) -> None: ...


@runtime_checkable
class MessagingService(QueueOperations, Protocol):
    """The whole protocol, what everything accepts: queue operations, push and fetch by id.

    Providers that do not push or fetch still offer the methods (they raise
    ``UnsupportedOperation``) and say so in their capabilities.
    """

    async def subscribe(self, queue: str) -> Subscription: ...

    async def subscribe_many(self, queues: Sequence[str]) -> Subscription: ...

    @property
    def requires_fallback_polling(self) -> bool: ...

    @property
    def fallback_polling_interval(self) -> float | None: ...

    @property
    def supports_fetch_by_message_id(self) -> bool: ...

    async def fetch_message(
        self, queue: str, msg_id: int, visibility_timeout: float
    ) -> QueuedMessage | None: ...


#: The former name of :class:`MessagingService`, kept for providers written against it.
SupportsPushNotifications = MessagingService


class BaseMessagingService(abc.ABC):
    """The public operations, written once: checks first, then the provider's own operation.

    Every public operation checks, before anything reaches the backend: that the provider
    is open (``ProviderClosed``), the queue name (``InvalidQueueName``), then its other
    arguments in parameter order (the ``check_*`` helpers of :mod:`mqcontract.validation`).
    Only then does it call the provider's protected operation (``_create_queue``,
    ``_send``, ``_receive``, ``_ack``, ...) with the checked values, and whatever the
    driver raises there becomes an mqcontract error through :attr:`error_table`.

    A provider implements the required protected operations and, if it offers them,
    ``_send_delayed``, ``_fetch`` and ``_subscribe``; without one of those the public
    operation raises ``UnsupportedOperation`` whatever its arguments. A provider may also
    override the public methods instead and do the checks itself.
    """

    provider_name: str = "abstract"
    #: Driver exception type -> mqcontract error, applied at the edge of every operation.
    error_table: ClassVar[ErrorTable] = ErrorTable({})
    #: Set by ``close()``; every public operation refuses to run once it is true.
    _closed: bool = False
    #: Where the backend is, for errors (which redact credentials).
    _target: str = ""
    #: The bound each operation is held to, for ``OperationTimeout``.
    _operation_timeout: float = 0.0

    @property
    @abc.abstractmethod
    def capabilities(self) -> Capabilities:
        """The declared capabilities (constant for the provider's lifetime)."""

    # -- queues ------------------------------------------------------------------------

    async def create_queue(self, name: str) -> None:
        """Create ``name`` if missing; an existing queue keeps its messages."""
        self._check_open()
        queue = check_queue_name(name)
        await self._translated("create_queue", queue, self._create_queue(queue))

    async def delete_queue(self, name: str) -> None:
        """Delete ``name`` and its messages if present."""
        self._check_open()
        queue = check_queue_name(name)
        await self._translated("delete_queue", queue, self._delete_queue(queue))
        self._book.forget_queue(queue)

    async def queue_exists(self, name: str) -> bool:
        """Whether ``name`` exists."""
        self._check_open()
        queue = check_queue_name(name)
        return await self._translated("queue_exists", queue, self._queue_exists(queue))

    async def list_queues(self) -> list[str]:
        """Every queue this provider can see, sorted (``UnsupportedOperation`` unless the
        ``list_queues`` capability is claimed)."""
        if not self.capabilities.list_queues:
            raise UnsupportedOperation(self.provider_name, self._unsupported("list_queues"))
        self._check_open()
        return await self._translated("list_queues", "", self._list_queues())

    # -- sending -----------------------------------------------------------------------

    async def send_message(self, queue: str, payload: bytes) -> int:
        """Enqueue ``payload``; return its id."""
        self._check_open()
        name = check_queue_name(queue)
        data = check_payload(name, payload, self.capabilities)
        return await self._translated("send_message", name, self._send(name, data))

    async def send_message_with_delay(
        self, queue: str, payload: bytes, delay_seconds: float
    ) -> int:
        """Enqueue ``payload``, invisible for ``delay_seconds``; return its id."""
        if not self._offers("_send_delayed"):
            raise self._not_offered("send_message_with_delay", "_send_delayed", "delay")
        self._check_open()
        name = check_queue_name(queue)
        caps = self.capabilities
        data = check_payload(name, payload, caps)
        delay = check_delay(name, delay_seconds, caps)
        return await self._translated(
            "send_message_with_delay", name, self._send_delayed(name, data, delay)
        )

    async def send_batch(self, queue: str, payloads: Sequence[bytes]) -> list[int]:
        """Enqueue several payloads in order; ids are returned in the same order.

        Every payload is checked first, so an oversized one rejects the whole batch; an
        empty batch still needs the queue to exist.
        """
        self._check_open()
        name = check_queue_name(queue)
        if not isinstance(payloads, Iterable):
            raise InvalidArgument("payloads", payloads, "a sequence of bytes", name)
        caps = self.capabilities
        checked = [check_payload(name, payload, caps) for payload in payloads]
        return await self._translated("send_batch", name, self._send_batch(name, checked))

    # -- receiving and settling --------------------------------------------------------

    async def receive_messages(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        """Claim up to ``limit`` visible messages, oldest first."""
        self._check_open()
        name = check_queue_name(queue)
        caps = self.capabilities
        count = check_limit(name, limit, caps)
        seconds = check_visibility_timeout(name, visibility_timeout, caps)
        return self._remember(
            await self._translated("receive_messages", name, self._receive(name, count, seconds))
        )

    async def fetch_message(
        self, queue: str, msg_id: int, visibility_timeout: float
    ) -> QueuedMessage | None:
        """Claim one specific visible message; ``None`` if it is not visible now."""
        if not self._offers("_fetch"):
            raise self._not_offered("fetch_message", "_fetch", "fetch_by_id")
        self._check_open()
        name = check_queue_name(queue)
        seconds = check_visibility_timeout(name, visibility_timeout, self.capabilities)
        if not is_message_id(msg_id):  # names no message: True, 1.0 or "1" never fetch 1
            if not await self._translated("fetch_message", name, self._queue_exists(name)):
                raise QueueNotFound(name)
            return None
        got = await self._translated("fetch_message", name, self._fetch(name, msg_id, seconds))
        if got is not None:
            self._remember([got])
        return got

    async def ack_message(self, queue: str, msg_id: int) -> None:
        """Remove for good the message this service holds as ``msg_id`` (its live claim)."""
        self._check_open()
        name = check_queue_name(queue)
        claim = await self._own_claim("ack_message", name, msg_id)
        await self._settle_claim("ack_message", name, claim, self._ack)

    async def nack_message(self, queue: str, msg_id: int) -> None:
        """Release the message this service holds as ``msg_id``: visible again at once."""
        self._check_open()
        name = check_queue_name(queue)
        claim = await self._own_claim("nack_message", name, msg_id)
        await self._settle_claim("nack_message", name, claim, self._nack)

    async def ack_claim(self, queue: str, claim: ClaimRef) -> None:
        """Remove the claimed message for good, if ``claim`` still holds it."""
        self._check_open()
        name = check_queue_name(queue)
        await self._settle_claim("ack_claim", name, check_claim(name, claim), self._ack)

    async def nack_claim(self, queue: str, claim: ClaimRef) -> None:
        """Release the claimed message (visible again at once), if ``claim`` still holds it."""
        self._check_open()
        name = check_queue_name(queue)
        await self._settle_claim("nack_claim", name, check_claim(name, claim), self._nack)

    async def ack_claims(self, queue: str, claims: Sequence[ClaimRef]) -> list[bool]:
        """Ack several claims at once; for each, whether it was settled (False: stale).

        A stale claim is reported, not raised, so one late handler cannot hide the
        others' outcomes; an empty batch settles nothing. A missing queue is
        ``QueueNotFound`` (LIFE-6) whatever the batch holds: when no claim is live (an
        empty batch, every claim stale or of another queue) that costs one round trip,
        on this path only.
        """
        self._check_open()
        name = check_queue_name(queue)
        given: object = claims
        if isinstance(given, str | bytes) or not isinstance(given, Iterable):
            raise InvalidArgument("claims", given, "a sequence of claims", name)
        checked: list[Claim | None] = []
        for ref in given:
            try:
                checked.append(check_claim(name, ref))
            except StaleClaim:
                checked.append(None)
        live = [c for c in checked if c is not None]
        if not live:
            if not await self._translated("ack_claims", name, self._queue_exists(name)):
                raise QueueNotFound(name)
            return [False] * len(checked)
        settled = iter(await self._translated("ack_claims", name, self._ack_many(name, live)))
        for claim in live:
            self._book.discard(claim)
        return [c is not None and bool(next(settled)) for c in checked]

    async def _settle_claim(
        self, operation: str, queue: str, claim: Claim, action: _Settlement
    ) -> None:
        try:
            await self._translated(operation, queue, action(queue, claim))
        except MessageNotFound:
            self._book.discard(claim)
            raise
        self._book.discard(claim)

    async def _own_claim(self, operation: str, queue: str, msg_id: int) -> Claim:
        """The live claim this service made for ``msg_id``; a missing queue is still
        ``QueueNotFound`` (one round trip, on this error path only)."""
        claim = self._book.find(queue, msg_id)
        if claim is None:
            if not await self._translated(operation, queue, self._queue_exists(queue)):
                raise QueueNotFound(queue)
            raise MessageNotFound(queue, msg_id)
        return claim

    @property
    def _book(self) -> ClaimBook:
        """The claims this service made (created on first use: subclasses need not call
        ``__init__``)."""
        book: ClaimBook | None = self.__dict__.get("_claim_book")
        if book is None:
            book = self.__dict__["_claim_book"] = ClaimBook()
        return book

    def _remember(self, messages: list[QueuedMessage]) -> list[QueuedMessage]:
        book = self._book
        now = book.now()
        for message in messages:
            if message.claim is not None:
                book.record(message.claim, now)
        return messages

    def _took(self, note: MessageNotification) -> None:
        """A pushed claim reached the caller: ``ack_message`` may now settle it by id."""
        if isinstance(note, Message) and note.claimed and note.message.claim is not None:
            self._book.record(note.message.claim)

    # -- push --------------------------------------------------------------------------

    async def subscribe(self, queue: str) -> QueueSubscription:
        """Push notifications for one queue."""
        return await self.subscribe_many([queue])

    async def subscribe_many(self, queues: Sequence[str]) -> QueueSubscription:
        """Push notifications for several queues on one subscription."""
        if not self._offers("_subscribe"):
            raise self._not_offered("subscribe", "_subscribe", "push")
        self._check_open()
        # A str is a sequence of one-letter names, never what the caller meant.
        if isinstance(queues, str | bytes) or not isinstance(queues, Iterable):
            raise InvalidArgument("queues", queues, "a sequence of queue names")
        # Every name is checked (and so known hashable) before duplicates are dropped.
        names = tuple(dict.fromkeys([check_queue_name(name) for name in queues]))
        only = names[0] if len(names) == 1 else ""
        subscription = await self._translated("subscribe", only, self._subscribe(names))
        subscription.observe_takes(self._took)
        return subscription

    # -- the provider's operations (arguments already checked) -------------------------

    async def _create_queue(self, name: str) -> None:
        raise self._missing("create_queue", "_create_queue")

    async def _delete_queue(self, name: str) -> None:
        raise self._missing("delete_queue", "_delete_queue")

    async def _queue_exists(self, name: str) -> bool:
        raise self._missing("queue_exists", "_queue_exists")

    async def _list_queues(self) -> list[str]:
        raise self._missing("list_queues", "_list_queues")

    async def _send(self, queue: str, payload: bytes) -> int:
        raise self._missing("send_message", "_send")

    async def _send_delayed(self, queue: str, payload: bytes, delay_seconds: float) -> int:
        """Optional: without it, delayed sends are ``UnsupportedOperation``."""
        raise UnsupportedOperation(self.provider_name, "send_message_with_delay")

    async def _send_batch(self, queue: str, payloads: list[bytes]) -> list[int]:
        """One by one through ``_send``; override it if the backend sends a batch at once."""
        if not payloads and not await self._queue_exists(queue):
            raise QueueNotFound(queue)
        return [await self._send(queue, payload) for payload in payloads]

    async def _receive(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        raise self._missing("receive_messages", "_receive")

    async def _fetch(
        self, queue: str, msg_id: int, visibility_timeout: float
    ) -> QueuedMessage | None:
        """Optional: without it, ``fetch_message`` is ``UnsupportedOperation``."""
        raise UnsupportedOperation(self.provider_name, "fetch_message")

    async def _ack(self, queue: str, claim: Claim) -> None:
        """Delete the message if ``claim`` still holds it, in one step; else raise
        ``StaleClaim`` (or ``MessageNotFound``) and change nothing."""
        raise self._missing("ack_message", "_ack")

    async def _nack(self, queue: str, claim: Claim) -> None:
        """Make the message visible now if ``claim`` still holds it; else as ``_ack``."""
        raise self._missing("nack_message", "_nack")

    async def _ack_many(self, queue: str, claims: list[Claim]) -> list[bool]:
        """One by one through ``_ack``; override it if the backend settles many at once."""
        settled: list[bool] = []
        for claim in claims:
            try:
                await self._ack(queue, claim)
            except MessageNotFound:
                settled.append(False)
            else:
                settled.append(True)
        return settled

    async def _subscribe(self, queues: tuple[str, ...]) -> QueueSubscription:
        """Optional: without it, ``subscribe`` is ``UnsupportedOperation``."""
        raise UnsupportedOperation(self.provider_name, "subscribe")

    # -- the edge ----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ProviderClosed(self.provider_name)

    def _unsupported(self, operation: str) -> str:
        """How ``UnsupportedOperation`` names ``operation``: a provider may add why."""
        return operation

    def _offers(self, operation: str) -> bool:
        """Whether this provider implements the optional protected ``operation``."""
        return getattr(type(self), operation) is not getattr(BaseMessagingService, operation)

    def _not_offered(self, public: str, operation: str, capability: str) -> UnsupportedOperation:
        """``UnsupportedOperation`` for an optional operation the class does not implement;
        when its capabilities claim it anyway, the message says which to change."""
        claimed = getattr(self.capabilities, capability)
        if claimed is False or claimed == PushKind.NONE:
            return UnsupportedOperation(self.provider_name, public)
        declared, instead = (
            ("True", "False")
            if isinstance(claimed, bool)
            else (f"PushKind.{PushKind(claimed).name}", "PushKind.NONE")
        )
        why = (
            f"{type(self).__name__}'s Capabilities declare {capability}={declared}, but it"
            f" implements no {operation}: implement it, or declare {capability}={instead}"
        )
        return UnsupportedOperation(self.provider_name, public, why)

    def _missing(self, public: str, operation: str) -> NotImplementedError:
        name = type(self).__name__
        return NotImplementedError(f"{name} implements neither {public} nor {operation}")

    def _failure(self, operation: str, queue: str = "", *, connecting: bool = False) -> Failure:
        """What an error translated now would report (read when the call fails)."""
        return Failure(
            self.provider_name,
            self._target,
            operation,
            queue,
            self._operation_timeout,
            closed=self._closed,
            connecting=connecting,
        )

    async def _translated(
        self, operation: str, queue: str, call: Awaitable[T], *, connecting: bool = False
    ) -> T:
        """Await ``call``, raising a driver exception as its mqcontract error, ``from`` it."""
        return await await_translated(
            call, self.error_table, lambda: self._failure(operation, queue, connecting=connecting)
        )

    # -- derived properties and lifetime -----------------------------------------------

    @property
    def requires_fallback_polling(self) -> bool:
        """Whether push can miss messages, so a poller must back it up."""
        return self.capabilities.requires_fallback_polling

    @property
    def fallback_polling_interval(self) -> float | None:
        """Suggested poll interval in seconds when fallback polling is required."""
        return self.capabilities.fallback_polling_interval

    @property
    def supports_fetch_by_message_id(self) -> bool:
        """Whether :meth:`fetch_message` is available."""
        return self.capabilities.fetch_by_id

    @property
    def supports_push(self) -> bool:
        """Whether :meth:`subscribe` delivers anything."""
        return self.capabilities.push is not PushKind.NONE

    async def close(self) -> None:
        """Release connections; further operations raise ``ProviderClosed``."""
        self._closed = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
