"""Thin grpc.aio servicer: proto ⇄ engine types. All logic lives in engine/."""
from __future__ import annotations

import asyncio

from shared.errors import InvalidArgument
from tts.frontend.v1 import frontend_pb2, frontend_pb2_grpc

from .engine import FrontendEngine, Segment
from .engine.merge import MergePolicy

# Engine calls on inputs up to this many characters run inline (they take well under a few ms).
INLINE_CHARS = 32


def segment_to_proto(seg: Segment) -> frontend_pb2.Segment:
    return frontend_pb2.Segment(
        index=seg.index, text=seg.text, normalized=seg.normalized,
        span=frontend_pb2.Span(start=seg.span[0], end=seg.span[1]),
        words=[frontend_pb2.Word(text=w.text, lang=w.lang, pinyin=w.pinyin,
                                 span=frontend_pb2.Span(start=w.span[0], end=w.span[1]), citation_pinyin=w.citation,
                                 english=[frontend_pb2.Pronunciation(text=p.text, arpabet=p.arpabet, spelled=p.spelled)
                                          for p in w.english])
               for w in seg.words],
        languages=[frontend_pb2.LanguageSpan(lang=lang, span=frontend_pb2.Span(start=a, end=b))
                   for lang, a, b in seg.languages],
        source_map=[frontend_pb2.SourceMap(normalized=frontend_pb2.Span(start=m.normalized[0], end=m.normalized[1]),
                                           source=frontend_pb2.Span(start=m.source[0], end=m.source[1]))
                    for m in seg.source_map],
    )


def _merge(cfg: frontend_pb2.NormalizeConfig) -> MergePolicy | None:
    if cfg.merge_min_units < 0 or cfg.merge_max_units < 0:
        raise InvalidArgument("config.merge_min_units", "must be >= 0")
    return MergePolicy.of(cfg.merge_min_units, cfg.merge_max_units)


async def _call(fn, *args, size: int = INLINE_CHARS + 1):
    if size <= INLINE_CHARS:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


class FrontendServicer(frontend_pb2_grpc.FrontendServicer):
    def __init__(self, engine: FrontendEngine, shared=None):
        self.engine = engine
        self.shared = shared        # dictstore.SharedDictionary when TTS_FRONTEND_REDIS_URL is set

    def _stream(self, cfg: frontend_pb2.NormalizeConfig):
        return self.engine.stream(cfg.language, cfg.phoneme_mode, cfg.max_segment_chars or None, cfg.decoder_rtf,
                                  merge=_merge(cfg), whole_text=cfg.whole_text)

    async def Normalize(self, request_iterator, context):
        stream = None
        async for req in request_iterator:
            kind = req.WhichOneof("request")
            if stream is None:
                if kind != "config":
                    raise InvalidArgument("config", "first message must be config")
                stream = self._stream(req.config)
                continue
            if kind == "config":
                raise InvalidArgument("config", "config may only be sent once, as the first message")
            if kind == "text":
                segments = await _call(stream.push, req.text, size=len(req.text) + len(stream.buf))
            elif kind == "flush":
                segments = await _call(stream.flush, size=len(stream.buf))
            else:
                raise InvalidArgument("request", "empty message (expected text or flush)")
            for seg in segments:
                yield frontend_pb2.NormalizeResponse(segment=segment_to_proto(seg))
        if stream is None:
            raise InvalidArgument("config", "first message must be config")
        for seg in await _call(stream.flush, size=len(stream.buf)):
            yield frontend_pb2.NormalizeResponse(segment=segment_to_proto(seg))

    async def Analyze(self, request, context):
        cfg = request.config
        segments = await _call(self.engine.analyze, request.text, cfg.language, cfg.phoneme_mode,
                               cfg.max_segment_chars or None, cfg.decoder_rtf, _merge(cfg), size=len(request.text))
        return frontend_pb2.AnalyzeResponse(segments=[segment_to_proto(s) for s in segments])

    async def ReloadDictionary(self, request, context):
        if self.shared is not None:         # every replica applies it (pub/sub), not only this one
            if request.HasField("content"):
                entries, errors = await self.shared.write(request.content)
            else:
                entries, errors = await self.shared.reload()
        elif request.HasField("content"):
            entries, errors = await asyncio.to_thread(self.engine.write_dictionary, request.content)
        else:
            entries, errors = await asyncio.to_thread(self.engine.reload_dictionary)
        return frontend_pb2.ReloadDictionaryResponse(
            entries=entries, errors=[frontend_pb2.DictionaryError(line=n, message=m) for n, m in errors],
            path=self.engine.replace_dict_path or "", content=await asyncio.to_thread(self.engine.dictionary_text))


def make_engine(settings) -> FrontendEngine:
    return FrontendEngine(settings.replace_dict_path, settings.max_segment_chars,
                          dict_check_interval_s=settings.dict_check_interval_s,
                          max_text_chars=settings.max_text_chars)


def register_with(engine: FrontendEngine, shared=None):
    def register(server):
        frontend_pb2_grpc.add_FrontendServicer_to_server(FrontendServicer(engine, shared), server)
        return [frontend_pb2.DESCRIPTOR.services_by_name["Frontend"].full_name]

    return register
