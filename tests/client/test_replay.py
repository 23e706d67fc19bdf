import asyncio

from google.protobuf.wrappers_pb2 import StringValue

from protoc_gen_localfirst.runtime.client.replay import AsyncRequestReplay, SyncRequestReplay


def messages(n: int) -> list[StringValue]:
    return [StringValue(value=str(i)) for i in range(n)]


def values(items: object) -> list[str]:
    return [m.value for m in items]  # type: ignore[attr-defined]


def test_second_attempt_replays_then_continues() -> None:
    replay = SyncRequestReplay(iter(messages(5)))
    first = replay.attempt()
    assert [next(first).value, next(first).value] == ["0", "1"]
    second = replay.attempt()
    assert values(second) == ["0", "1", "2", "3", "4"]
    assert list(first) == []  # the superseded attempt pulls nothing more
    assert replay.replayable


def test_message_pulled_by_a_dead_attempt_is_not_lost() -> None:
    replay = SyncRequestReplay(iter(messages(3)))
    first = replay.attempt()
    second_started = replay.attempt()
    # the old iterator was created before; it may not pull any more
    assert list(first) == []
    assert values(second_started) == ["0", "1", "2"]


def test_over_the_limit_the_call_is_no_longer_replayable() -> None:
    big = [StringValue(value="x" * 100) for _ in range(5)]
    replay = SyncRequestReplay(iter(big), limit_bytes=250)
    assert len(list(replay.attempt())) == 5
    assert not replay.replayable


def test_async_replay_over_async_source() -> None:
    async def source():  # type: ignore[no-untyped-def]
        for m in messages(4):
            yield m

    async def run() -> tuple[list[str], list[str]]:
        replay = AsyncRequestReplay(source())
        first = replay.attempt()
        got_first = [(await anext(first)).value]
        second = [m.value async for m in replay.attempt()]
        return got_first, second

    assert asyncio.run(run()) == (["0"], ["0", "1", "2", "3"])
