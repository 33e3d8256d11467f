"""Speaker benchmark: starts its own redis-server and speaker service on free loopback ports and prints
embed latency on a miss (5 s audio), hit latency p50/p95 through gRPC, hit/miss ratio and 4-client throughput."""
from __future__ import annotations

import io
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent

import grpc

from tests.procs import RedisServer, Service
from tts.speaker.v1 import speaker_pb2, speaker_pb2_grpc


def five_seconds(variant: int) -> bytes:
    audio, rate = sf.read(ROOT / "tests/data/BAC009S0764W0121.wav", dtype="float32")
    audio = np.concatenate([audio, audio])[: 5 * rate] * (0.5 + variant * 1e-3)   # distinct content per variant
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format="WAV")
    return buf.getvalue()


def ms(values):
    return statistics.median(values) * 1000, float(np.percentile(values, 95)) * 1000


def main() -> None:
    redis = RedisServer().start()
    svc = Service("speaker", env={"TTS_SPEAKER_REDIS_URL": redis.url, "TTS_SPEAKER_LOCAL_CACHE_ENTRIES": "0"}).start()
    try:
        stub = speaker_pb2_grpc.SpeakerStub(grpc.insecure_channel(svc.addr))
        misses, hits = [], []
        for i in range(10):
            data = five_seconds(i)
            t = time.perf_counter()
            assert not stub.Embed(speaker_pb2.EmbedRequest(audio=data)).cache_hit
            misses.append(time.perf_counter() - t)
            for _ in range(20):
                t = time.perf_counter()
                assert stub.Embed(speaker_pb2.EmbedRequest(audio=data)).cache_hit
                hits.append(time.perf_counter() - t)
        data = five_seconds(0)
        n = 200
        t = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda _: stub.Embed(speaker_pb2.EmbedRequest(audio=data)), range(n)))
        throughput = n / (time.perf_counter() - t)
        info = stub.Info(speaker_pb2.InfoRequest()).cache
        print(f"{'metric':40} {'p50 ms':>8} {'p95 ms':>8}")
        print(f"{'embed, cache miss (5 s audio)':40} {ms(misses)[0]:8.1f} {ms(misses)[1]:8.1f}")
        print(f"{'embed, cache hit via Redis (5 s audio)':40} {ms(hits)[0]:8.2f} {ms(hits)[1]:8.2f}")
        print(f"hit/miss: {info.hits}/{info.misses} ({info.hits / (info.hits + info.misses):.1%} hits), "
              f"computations {info.computations}")
        print(f"throughput, 4 clients, cache hits: {throughput:.0f} req/s")
    finally:
        svc.stop()
        redis.stop()


if __name__ == "__main__":
    main()
