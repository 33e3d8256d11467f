"""A dead glmtts engine thread takes the decoder out of service: served in process through shared.serve() on
loopback (real gRPC, real health service), the exception injected into the running thread. Within 1 s the open
stream fails with UNAVAILABLE and health turns NOT_SERVING; new streams are refused with UNAVAILABLE."""
from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.decoder.__main__ import hooks
from services.decoder.engine.glmtts.engine import GLMTTSEngine
from services.decoder.engine.glmtts.settings import GLMTTSSettings
from services.decoder.settings import DecoderSettings
from shared.serve import serve
from tts.decoder.v1 import decoder_pb2, decoder_pb2_grpc
from tts.frontend.v1 import frontend_pb2

TEXT = "一二三四五六七八九十" * 3


def injected():
    raise RuntimeError("injected fault")


def kill(engine: GLMTTSEngine, thread: str) -> None:
    """Replace the call each thread loop makes outside its per-item try; the running loop hits it next time round."""
    if thread == "scheduler":
        engine.scheduler._next_batch = injected
    else:
        engine._next_job = injected


@pytest.mark.parametrize("thread", ["scheduler", "acoustic"])
async def test_a_dead_engine_thread_fails_streams_and_health_within_a_second(glmtts_checkpoint, thread):
    settings = DecoderSettings(port=0, grace_seconds=0.1, engines="glmtts", default_engine="glmtts")
    engine = GLMTTSEngine(GLMTTSSettings(path=str(glmtts_checkpoint), max_token_ratio=3.0, n_timesteps=2, threads=1))
    port_fut = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve("decoder", settings, **hooks(settings, {"glmtts": engine}),
                                     ready=port_fut.set_result))
    port = await asyncio.wait_for(port_fut, 60)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=""))
            status = health_pb2.HealthCheckResponse
            while (await watch.read()).status != status.SERVING:       # warm-up done
                pass
            stub = decoder_pb2_grpc.DecoderStub(ch)

            def requests():
                yield decoder_pb2.DecodeRequest(config=decoder_pb2.DecodeConfig(seed=1, chunk_size=1))
                yield decoder_pb2.DecodeRequest(segment=frontend_pb2.Segment(index=0, text=TEXT, normalized=TEXT))

            call = stub.Decode(requests())
            first = await call.read()
            assert first.WhichOneof("response") == "chunk"
            kill(engine, thread)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                while (r := await asyncio.wait_for(call.read(), 120)) != grpc.aio.EOF:
                    assert r.WhichOneof("response") == "chunk"        # no summary: the stream did not finish
                pytest.fail("the stream ended normally")
            failed_after = time.monotonic() - engine.dead_at
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
            assert f"glmtts {thread} thread died" in err.value.details()
            while (await asyncio.wait_for(watch.read(), 120)).status != status.NOT_SERVING:
                pass
            not_serving_after = time.monotonic() - engine.dead_at
            assert failed_after < 1.0 and not_serving_after < 1.0, (failed_after, not_serving_after)
            with pytest.raises(grpc.aio.AioRpcError) as again:
                await stub.Decode(requests()).read()
            assert again.value.code() == grpc.StatusCode.UNAVAILABLE
            watch.cancel()
    finally:
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass
        await engine.close()
