"""The harness's hooks act on the real server, and the provider recovers from them."""

from __future__ import annotations

from mqcontract.config import load_config
from mqcontract.errors import MessagingError
from mqcontract.testing import HarnessSettings

from mqcontract_beanstalkd import BeanstalkdMessagingService
from mqcontract_beanstalkd._protocol import Link, parse_list
from mqcontract_beanstalkd._tubes import Tubes
from mqcontract_beanstalkd.harness import BeanstalkdHarness, beanstalkd_harness
from support import RUN_ID, eventually, open_service, queue_name, settings


def _harness(run_id: str = RUN_ID) -> BeanstalkdHarness:
    environ = {"BEANSTALKD_URL": settings().url}
    harness = beanstalkd_harness(
        HarnessSettings(config=load_config(environ=environ), run_id=run_id)
    )
    assert isinstance(harness, BeanstalkdHarness)
    return harness


async def test_stored_ids_sees_visible_held_and_delayed_messages_without_claiming(
    service: BeanstalkdMessagingService, queue: str
) -> None:
    visible, held = await service.send_batch(queue, [b"v", b"h"])
    delayed = await service.send_message_with_delay(queue, b"d", 60)
    (got,) = await service.receive_messages(queue, 1, 60)
    assert got.msg_id == visible
    assert await _harness().stored_ids(service, queue) == [visible, held, delayed]
    (nxt,) = await service.receive_messages(queue, 1, 60)
    assert (nxt.msg_id, nxt.receive_count) == (held, 1)  # the backdoor claimed nothing
    assert await service.stored_ids("bs_never_made") == []


async def test_sever_connection_kills_it_on_the_server_and_the_provider_recovers(
    service: BeanstalkdMessagingService, queue: str
) -> None:
    sent = await service.send_message(queue, b"survives")
    link = service.link
    assert link is not None
    await _harness().sever_connection(service)
    probe = await open_service()
    try:
        assert probe.link is not None
        own = service.link_tube(link.serial).encode()
        gone = await probe.link.one(b"stats-tube " + own, "OK", "NOT_FOUND")
        assert gone.status == "NOT_FOUND"  # the server dropped the connection
    finally:
        await probe.close()

    async def works() -> bool:
        try:
            return await service.queue_exists(queue)
        except MessagingError:
            return False

    await eventually(works, 5, "provider usable after sever")
    (got,) = await service.receive_messages(queue, 1, 60)
    assert got.msg_id == sent


async def test_a_message_of_a_deleted_incarnation_never_comes_back(
    service: BeanstalkdMessagingService, queue: str
) -> None:
    # Another connection holds a message while the queue is deleted and re-created; when
    # that holder lets go, the message belongs to the old queue and is dropped.
    holder = await open_service()
    try:
        await service.send_message(queue, b"old")
        (held,) = await holder.receive_messages(queue, 1, 60)
        await service.delete_queue(queue)
        await service.create_queue(queue)
        new = await service.send_message(queue, b"new")
        await holder.close()  # the server releases the old message now
        got = await service.receive_messages(queue, 10, 60)
        assert [m.msg_id for m in got] == [new]
        assert held.msg_id not in await service.stored_ids(queue)
    finally:
        await holder.close()


async def test_each_run_has_its_own_tubes_and_teardown_empties_them() -> None:
    harness = _harness(f"{RUN_ID}td")
    assert harness.config.tube_prefix == f"mqc_{RUN_ID}td"
    outside = await open_service()
    svc = await harness.open()
    assert isinstance(svc, BeanstalkdMessagingService)
    try:
        q = queue_name()
        await svc.create_queue(q)
        await svc.send_message(q, b"x")
        await svc.send_message_with_delay(q, b"later", 60)
        assert q not in await outside.list_queues()  # another prefix: another namespace
        assert await svc.list_queues() == [q]
        await svc.close()
        await harness.teardown()
        link = await Link.connect(*_address(), "check")
        try:
            (tubes,) = await link.pipeline([b"list-tubes"])
            tube = Tubes.of(harness.config.tube_prefix, q)
            assert tube.messages not in parse_list(tubes.body)
            assert tube.registry not in parse_list(tubes.body)
        finally:
            await link.close()
    finally:
        await svc.close()
        await outside.close()


def _address() -> tuple[str, int]:
    from mqcontract_beanstalkd._config import parse_address

    return parse_address(settings().url)
