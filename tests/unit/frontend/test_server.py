"""The gRPC servicer, in process on a free port, through shared.serve()."""
import asyncio
import json

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shared.serve import serve
from tts.frontend.v1 import frontend_pb2 as pb
from tts.frontend.v1 import frontend_pb2_grpc as pbg

from services.frontend.server import make_engine, register_with
from services.frontend.settings import FrontendSettings


@pytest.fixture
def dict_path(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"char": "血", "pinyin": "xie3", "context": "流血"}, ensure_ascii=False) + "\n{bad\n",
                 encoding="utf-8")
    return p


async def _with_server(dict_path, body):
    settings = FrontendSettings(port=0, replace_dict_path=str(dict_path), grace_seconds=0.1)
    engine = make_engine(settings)
    port_fut = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve("frontend", settings, register_with(engine), warmup=engine.warmup,
                                     ready=port_fut.set_result))
    port = await asyncio.wait_for(port_fut, 30)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            health = health_pb2_grpc.HealthStub(ch)
            for _ in range(300):
                r = await health.Check(health_pb2.HealthCheckRequest(service=""))
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    break
                await asyncio.sleep(0.05)
            await body(pbg.FrontendStub(ch))
    finally:
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass


def test_grpc_roundtrip(dict_path):
    async def body(stub):
        q: asyncio.Queue = asyncio.Queue()

        async def reqs():
            while (item := await q.get()) is not None:
                yield item

        call = stub.Normalize(reqs())
        await q.put(pb.NormalizeRequest(config=pb.NormalizeConfig(language="zh")))
        await q.put(pb.NormalizeRequest(text="他流血了。"))
        first = await asyncio.wait_for(call.read(), 10)          # emitted before the text ends
        assert first.segment.text == "他流血了。" and "xie3" in [p for w in first.segment.words for p in w.pinyin]
        await q.put(pb.NormalizeRequest(text="没有标点"))
        await q.put(pb.NormalizeRequest(flush=True))
        second = await asyncio.wait_for(call.read(), 10)
        assert second.segment.text == "没有标点" and second.segment.span.start == 5
        await q.put(pb.NormalizeRequest(text="还有"))
        await q.put(None)                                            # half-close flushes
        third = await asyncio.wait_for(call.read(), 10)
        assert third.segment.text == "还有" and third.segment.index == 2
        assert await call.read() == grpc.aio.EOF

        resp = await stub.Analyze(pb.AnalyzeRequest(text="我用iPhone 15打了110", config=pb.NormalizeConfig()))
        assert [l.lang for l in resp.segments[0].languages] == ["zh", "en", "zh"]

        # citation tones (before sandhi) and spoken tones travel separately
        resp = await stub.Analyze(pb.AnalyzeRequest(text="你好，一起来吧", config=pb.NormalizeConfig()))
        words = [w for s in resp.segments for w in s.words]
        assert [p for w in words for p in w.pinyin] == ["ni2", "hao3", "yi4", "qi3", "lai2", "ba5"]
        assert [p for w in words for p in w.citation_pinyin] == ["ni3", "hao3", "yi1", "qi3", "lai2", "ba5"]

        # the engine-neutral readings on the wire: English pieces, erhua, the map back to the request text
        resp = await stub.Analyze(pb.AnalyzeRequest(text="那儿的Wi-Fi在9:45连上", config=pb.NormalizeConfig()))
        seg = resp.segments[0]
        words = {w.text: w for w in seg.words}
        assert list(words["那儿"].pinyin) == list(words["那儿"].citation_pinyin) == ["na4", "r5"]
        assert [(p.text, p.arpabet, p.spelled) for p in words["Wi-Fi"].english] == [("Wi", "W AY1", False),
                                                                                     ("Fi", "F AY2", False)]
        assert [(seg.normalized[m.normalized.start:m.normalized.end], "那儿的Wi-Fi在9:45连上"[m.source.start:m.source.end])
                for m in seg.source_map] == [("那儿的Wi-Fi在", "那儿的Wi-Fi在"), ("九点四十五分", "9:45"), ("连上", "连上")]

        rel = await stub.ReloadDictionary(pb.ReloadDictionaryRequest())
        assert rel.entries == 1 and [e.line for e in rel.errors] == [2]

        # first message must be config
        async def no_config():
            yield pb.NormalizeRequest(text="hi")

        with pytest.raises(grpc.aio.AioRpcError) as e:
            async for _ in stub.Normalize(no_config()):
                pass
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "config" in e.value.details()

        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.Analyze(pb.AnalyzeRequest(text="我[xie9]", config=pb.NormalizeConfig(phoneme_mode=True)))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "position" in e.value.details()

    asyncio.run(_with_server(dict_path, body))
