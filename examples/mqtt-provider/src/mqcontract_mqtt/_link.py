"""One MQTT v5 connection: paho-mqtt driven by the asyncio event loop, acknowledging by hand.

Why paho and not aiomqtt: aiomqtt (itself built on paho) acknowledges every QoS 1 message
the moment it arrives. An ack through it would settle nothing, and a message would be gone
from the broker before the consumer had looked at it. paho's ``manual_ack=True`` sends
the PUBACK only when :meth:`Link.ack` is called, so "acked" means what it says: until
then the message stays in this client's session, and the broker sends it again if the
session reconnects.

The socket is watched by the event loop (``add_reader``/``add_writer``, as aiomqtt
does), so every paho callback runs on the loop's thread. Only the blocking TCP connect runs
in a worker thread; the socket callbacks it triggers are handed to the loop.

Each successful CONNECT starts a new *generation*. A message carries the generation it
arrived in, and a PUBACK is only ever sent for a message of the current one: after a
reconnect the broker sends unacknowledged messages again under their old packet ids, and
an ack of the old delivery would otherwise settle whatever now holds that id.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from mqcontract_mqtt._config import Endpoint

__all__ = ["Incoming", "Link", "LinkDown", "LinkRefused"]

#: Receive Maximum sent in CONNECT: how many QoS 1 messages the broker may send this client
#: without their PUBACK. Mosquitto's own ``max_inflight_messages`` (20) applies to MQTT
#: 3.1.1 clients; a v5 client's Receive Maximum replaces it (checked: 50 unacked arrive).
RECEIVE_MAXIMUM = 65_535
#: PUBACK reason code 16: the broker accepted the message and found nobody to give it to.
NO_MATCHING_SUBSCRIBERS = 16


class LinkDown(ConnectionError):
    """The connection is down, or went down before the broker answered."""


class LinkRefused(ConnectionError):
    """The broker answered with a failure reason code."""


@dataclass(frozen=True, slots=True)
class Incoming:
    """One PUBLISH the broker sent this client."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    dup: bool
    retain: bool
    user_properties: dict[str, str]
    generation: int


def _properties(packet_type: int) -> Properties:
    """Empty MQTT v5 properties for one packet type (paho's constructor is untyped)."""
    return Properties(packet_type)  # type: ignore[no-untyped-call]


def _user_properties(message: mqtt.MQTTMessage) -> dict[str, str]:
    props = getattr(message, "properties", None)
    pairs: list[tuple[str, str]] = getattr(props, "UserProperty", []) or []
    return dict(pairs)


class Link:
    """A paho client on the running event loop; see the module docstring."""

    def __init__(
        self,
        endpoint: Endpoint,
        client_id: str,
        *,
        keepalive: int,
        session_expiry: int,
        on_message: Callable[[Incoming], None],
        on_lost: Callable[[], None],
        connect_timeout: float = 5.0,
        resume: bool = False,
    ) -> None:
        """``resume``: take over an existing session of ``client_id`` (never a clean start)."""
        self._loop = asyncio.get_running_loop()
        self._endpoint = endpoint
        self.client_id = client_id
        self._keepalive = keepalive
        self._on_message = on_message
        self._on_lost = on_lost
        self.generation = 0
        self.connected = False
        self.session_present = False
        self._closing = False
        self._started = False
        self._clean_start: mqtt.CleanStartOption = (
            False if resume else mqtt.MQTT_CLEAN_START_FIRST_ONLY
        )
        self._connack: asyncio.Future[bool] | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._gone = asyncio.Event()
        self._up = asyncio.Event()
        self._misc: asyncio.Task[None] | None = None
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
            reconnect_on_failure=False,
        )
        if endpoint.username is not None:
            client.username_pw_set(endpoint.username, endpoint.password)
        client.max_inflight_messages_set(RECEIVE_MAXIMUM)
        client.connect_timeout = connect_timeout
        client.on_connect = self._connected
        client.on_disconnect = self._disconnected
        client.on_publish = self._answered
        client.on_subscribe = self._answered_many
        client.on_unsubscribe = self._answered_many
        client.on_message = self._received
        client.on_socket_open = self._socket_open
        client.on_socket_close = self._socket_close
        client.on_socket_register_write = self._want_write
        client.on_socket_unregister_write = self._no_write
        self._client = client
        props = _properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = session_expiry
        props.ReceiveMaximum = RECEIVE_MAXIMUM
        self._connect_properties = props

    # -- connecting --------------------------------------------------------------------

    async def connect(self, bound: float) -> bool:
        """Connect (the first time with a clean session, later resuming it); whether the
        broker still had the session."""
        self._connack = self._loop.create_future()
        first, self._started = not self._started, True
        try:
            async with asyncio.timeout(bound):
                if first:
                    await self._loop.run_in_executor(None, self._first_connect)
                else:
                    await self._loop.run_in_executor(None, self._client.reconnect)
                present = await self._connack
        except (OSError, TimeoutError):
            self._drop_socket()
            raise
        if self._misc is None:
            self._misc = asyncio.create_task(self._housekeeping(), name=f"mqtt:{self.client_id}")
        return present

    def _first_connect(self) -> None:
        self._client.connect(
            self._endpoint.host,
            self._endpoint.port,
            self._keepalive,
            clean_start=self._clean_start,
            properties=self._connect_properties,
        )

    async def close(self, bound: float) -> None:
        """Say goodbye and end the session: the broker drops what this client was sent
        and never acknowledged (it does not pass it to another subscriber)."""
        await self._disconnect(bound, end_session=True)

    async def leave(self, bound: float) -> None:
        """Say goodbye and keep the session (its subscriptions and unacknowledged
        messages wait for whoever resumes it)."""
        await self._disconnect(bound, end_session=False)

    async def _disconnect(self, bound: float, *, end_session: bool) -> None:
        self._closing = True
        try:
            if self.connected:
                props = None
                if end_session:
                    props = _properties(PacketTypes.DISCONNECT)
                    props.SessionExpiryInterval = 0
                self._gone.clear()
                self._client.disconnect(properties=props)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(bound):
                        await self._gone.wait()
        finally:
            self._drop_socket()
            if self._misc is not None:
                self._misc.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._misc
                self._misc = None
            self._fail_pending()

    # -- operations --------------------------------------------------------------------

    async def wait_up(self) -> None:
        """Until the connection is up (an operation that has sent nothing yet may wait
        out a reconnect instead of failing)."""
        await self._up.wait()

    def _require(self) -> None:
        if not self.connected:
            raise LinkDown("not connected to the MQTT broker")

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        user_properties: Sequence[tuple[str, str]] = (),
    ) -> int:
        """Publish at QoS 1 and wait for the PUBACK; its reason code."""
        self._require()
        props = _properties(PacketTypes.PUBLISH)
        if user_properties:
            props.UserProperty = list(user_properties)
        info = self._client.publish(topic, payload, qos=1, retain=retain, properties=props)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise LinkDown(f"publish refused by the client: {mqtt.error_string(info.rc)}")
        code: ReasonCode | None = await self._wait(info.mid)
        value = code.value if code is not None else 0
        if value >= 128:
            raise LinkRefused(f"the broker refused the message: {code}")
        return value

    async def subscribe(self, topics: Sequence[str]) -> None:
        """Subscribe to ``topics`` at QoS 1 and wait for the SUBACK."""
        self._require()
        rc, mid = self._client.subscribe([(t, SubscribeOptions(qos=1)) for t in topics])
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise LinkDown(f"subscribe refused by the client: {mqtt.error_string(rc)}")
        codes: list[ReasonCode] = await self._wait(mid)
        refused = [str(c) for c in codes if c.is_failure]
        if refused:
            raise LinkRefused(f"the broker refused a subscription: {', '.join(refused)}")

    async def unsubscribe(self, topics: Sequence[str]) -> None:
        self._require()
        rc, mid = self._client.unsubscribe(list(topics))
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise LinkDown(f"unsubscribe refused by the client: {mqtt.error_string(rc)}")
        await self._wait(mid)

    def ack(self, message: Incoming) -> bool:
        """Send the PUBACK of ``message``; False (nothing sent) if it arrived on an earlier
        connection or the connection is down: the broker will send it again."""
        if message.qos == 0:
            return True
        if message.generation != self.generation or not self.connected:
            return False
        return self._client.ack(message.mid, 1) == MQTTErrorCode.MQTT_ERR_SUCCESS

    async def _wait(self, mid: int) -> Any:
        future: asyncio.Future[Any] = self._loop.create_future()
        self._pending[mid] = future
        try:
            return await future
        finally:
            self._pending.pop(mid, None)

    # -- paho callbacks (on the loop's thread) -----------------------------------------

    def _connected(self, client: Any, userdata: Any, flags: Any, code: Any, props: Any) -> None:
        future = self._connack
        if code.is_failure:
            if future is not None and not future.done():
                future.set_exception(LinkRefused(f"the broker refused the connection: {code}"))
            return
        self.generation += 1
        self.connected = True
        self._up.set()
        self.session_present = bool(flags.session_present)
        if future is not None and not future.done():
            future.set_result(self.session_present)

    def _disconnected(self, client: Any, userdata: Any, flags: Any, code: Any, props: Any) -> None:
        was = self.connected
        self.connected = False
        self._up.clear()
        self._gone.set()
        self._fail_pending()
        future = self._connack
        if future is not None and not future.done():
            future.set_exception(LinkDown(f"disconnected while connecting: {code}"))
        if was and not self._closing:
            self._on_lost()

    def _answered(self, client: Any, userdata: Any, mid: int, code: Any, props: Any) -> None:
        future = self._pending.get(mid)
        if future is not None and not future.done():
            future.set_result(code)

    def _answered_many(self, client: Any, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        self._answered(client, userdata, mid, codes, props)

    def _received(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._on_message(
            Incoming(
                topic=message.topic,
                payload=bytes(message.payload),
                mid=message.mid,
                qos=message.qos,
                dup=bool(message.dup),
                retain=bool(message.retain),
                user_properties=_user_properties(message),
                generation=self.generation,
            )
        )

    def _fail_pending(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(LinkDown("the connection to the MQTT broker was lost"))

    # -- the socket on the event loop --------------------------------------------------

    def _on_loop(self, action: Callable[[], None]) -> None:
        """Run ``action`` on the loop's thread (the connect runs in a worker thread)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            action()
        else:
            self._loop.call_soon_threadsafe(action)

    def _socket_open(self, client: Any, userdata: Any, sock: Any) -> None:
        self._on_loop(lambda: self._loop.add_reader(sock, self._read))

    def _socket_close(self, client: Any, userdata: Any, sock: Any) -> None:
        def forget() -> None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(sock)
                self._loop.remove_writer(sock)

        self._on_loop(forget)

    def _want_write(self, client: Any, userdata: Any, sock: Any) -> None:
        self._on_loop(lambda: self._loop.add_writer(sock, self._write))

    def _no_write(self, client: Any, userdata: Any, sock: Any) -> None:
        def stop() -> None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_writer(sock)

        self._on_loop(stop)

    def _read(self) -> None:
        self._ack_at_once()
        self._client.loop_read()

    def _ack_at_once(self) -> None:
        """Acknowledge what we read at once (Linux ``TCP_QUICKACK``; the kernel drops it
        again, so it is set before every read).

        A broker without ``TCP_NODELAY`` (Mosquitto's default) writes the copy of a
        message it delivers to us and the PUBACK of our publish as two packets, and Nagle
        holds the second until we acknowledge the first: a delayed ACK, 40 ms here, so
        every publish on a queue we consume took 44 ms (1,000 in 44 s; 0.6 s now).
        """
        sock = self._client.socket()
        quickack = getattr(socket, "TCP_QUICKACK", None)
        if quickack is not None and isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)

    def _write(self) -> None:
        self._client.loop_write()

    def _drop_socket(self) -> None:
        sock = self._client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(sock)
                self._loop.remove_writer(sock)
            with contextlib.suppress(OSError):
                sock.close()

    async def _housekeeping(self) -> None:
        """Keepalive pings and their deadline: paho's ``loop_misc`` once a second."""
        while True:
            await asyncio.sleep(1.0)
            if self.connected:
                self._client.loop_misc()
