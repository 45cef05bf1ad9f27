"""In-process wake-ups: a publish wakes exactly the waiters on its key, and none is lost."""

import asyncio

from cloud.hub import Hub


def test_publish_wakes_subscribers_of_the_key_only() -> None:
    async def scenario() -> tuple[bool, bool]:
        hub = Hub()
        with hub.subscribe("agent:a") as a, hub.subscribe("agent:b") as b:
            hub.publish(["agent:a"])
            return await a.wait(1), await b.wait(0.05)

    assert asyncio.run(scenario()) == (True, False)


def test_publish_before_wait_is_not_lost() -> None:
    async def scenario() -> bool:
        hub = Hub()
        with hub.subscribe("task:1") as sub:
            hub.publish(["task:1"])  # e.g. the task finished between our read and our wait
            return await sub.wait(0.05)

    assert asyncio.run(scenario()) is True


def test_close_wakes_everyone_and_later_subscribers_at_once() -> None:
    async def scenario() -> tuple[bool, bool]:
        hub = Hub()
        with hub.subscribe("x") as sub:
            waiter = asyncio.create_task(sub.wait(5))
            await asyncio.sleep(0)
            hub.close()
            first = await waiter
        with hub.subscribe("y") as late:
            second = await late.wait(5)
        return first, second

    assert asyncio.run(scenario()) == (True, True)


def test_unsubscribe_forgets_keys() -> None:
    hub = Hub()
    with hub.subscribe("k"):
        pass
    assert hub._subs == {}
