"""Small asyncio helpers for piping streams between stages."""
from __future__ import annotations

import asyncio
from typing import AsyncIterable, AsyncIterator, TypeVar

T = TypeVar("T")

END = object()   # put on a queue to end the iterator made by ``drain``


async def drain(queue: asyncio.Queue) -> AsyncIterator:
    """Iterate a queue until ``END``; an exception put on the queue is raised."""
    while True:
        item = await queue.get()
        if item is END:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def retrieve(task: asyncio.Future) -> None:
    """Mark a finished task's exception as seen (it was handled elsewhere, or its work was cancelled on purpose), so
    asyncio never logs "Task exception was never retrieved" for it. Use as a done callback."""
    if not task.cancelled():
        task.exception()


def abandon(*tasks: asyncio.Future) -> None:
    """Cancel tasks whose outcome no longer matters, without an unretrieved-exception log when they end."""
    for task in tasks:
        if task is None:
            continue
        task.cancel()
        task.add_done_callback(retrieve)


async def race(source: AsyncIterable[T], *helpers: asyncio.Task) -> AsyncIterator[T]:
    """Yield from ``source``; if a helper task fails first, cancel the pending read and raise its exception.

    Lets a pipeline stop at once when any of its concurrently running parts fails (bad input, a stage down),
    instead of waiting for the main stream to notice.
    """
    iterator = source.__aiter__()
    watched = set(helpers)
    nxt = None
    try:
        while True:
            nxt = asyncio.ensure_future(iterator.__anext__())
            while True:
                pending = {nxt} | {t for t in watched if not t.done()}
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                failed = [t for t in done if t is not nxt and not t.cancelled() and t.exception() is not None]
                if failed:
                    raise failed[0].exception()
                watched -= done
                if nxt in done:
                    break
            try:
                yield nxt.result()
            except StopAsyncIteration:
                return
    finally:
        # cancelled (client gone, deadline) or a helper failed: the pending read's own error is not news
        if nxt is not None and not nxt.done():
            abandon(nxt)
