"""shared.aio: a read given up on (the client went away, a helper failed first) never makes asyncio log "Task
exception was never retrieved" when it fails later."""
from __future__ import annotations

import asyncio
import gc

from shared.aio import race


def _collect_loop_errors() -> list:
    errors: list = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx["message"]))
    return errors


async def test_a_cancelled_race_leaves_no_pending_read_to_fail_later():
    errors = _collect_loop_errors()
    broken = asyncio.Event()

    class Source:
        def __aiter__(self):
            return self

        async def __anext__(self):
            await broken.wait()
            raise ValueError("the stream broke after its reader was cancelled")

    async def consume():
        async for _ in race(Source()):
            pass

    consumer = asyncio.ensure_future(consume())
    await asyncio.sleep(0.01)
    consumer.cancel()                      # the client went away while the read was pending
    await asyncio.wait({consumer})
    broken.set()                           # the abandoned read would fail now
    for _ in range(3):
        await asyncio.sleep(0)
    del consumer
    gc.collect()
    assert not [e for e in errors if "never retrieved" in e], errors
