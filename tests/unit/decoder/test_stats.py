"""Engine stats: the typed object, and the chunk queue that counts its buffered audio on put and get."""
import numpy as np

from services.decoder.engine.base import Chunk, ChunkQueue, EngineStats


def chunk(n: int) -> Chunk:
    return Chunk(np.zeros(n, np.float32), 24000, 0)


async def test_buffered_bytes_follow_puts_and_gets():
    q = ChunkQueue(maxsize=3)
    assert q.buffered_bytes == 0
    await q.put(chunk(100))
    q.put_nowait(chunk(50))
    assert q.buffered_bytes == 150 * 4
    q.put_nowait(object())                  # an end marker holds no audio
    assert q.buffered_bytes == 150 * 4 and q.full()
    assert len((await q.get()).audio) == 100
    assert q.buffered_bytes == 50 * 4
    await q.get()
    await q.get()
    assert q.buffered_bytes == 0 and not q.full()


async def test_an_exception_in_the_queue_counts_nothing():
    q = ChunkQueue()
    q.put_nowait(RuntimeError("boom"))
    assert q.buffered_bytes == 0
    assert isinstance(await q.get(), RuntimeError)
    assert q.buffered_bytes == 0


def test_stats_defaults_say_no_capacity_measurement():
    s = EngineStats(active_streams=2)
    assert s.throughput is None and s.buffered_bytes == 0 and s.active_streams == 2
