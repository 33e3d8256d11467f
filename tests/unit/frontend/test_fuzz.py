"""Property test of the frontend engine: any Unicode text, whole or streamed in any pieces, in either mode, gives
segments (well-formed engine-neutral readings, spans and a source map that point back into the input) or a clear
InvalidArgument naming the field; never another exception. Bounded to 200 examples so it runs in seconds."""
from __future__ import annotations

import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.errors import InvalidArgument

from .conftest import check_readings

# all of Unicode (surrogates and controls included), with the characters the frontend treats specially weighted up
SPECIAL = st.sampled_from(list("你好世界行长重一不。，！？!?.,;:[]{}|$¥%℃-+×/0123456789 \n\tabcXYZ😀\u202e\ufeff\x00"))
TEXT = st.lists(st.one_of(st.characters(), SPECIAL), max_size=120).map("".join)


@pytest.fixture(autouse=True)
def _hide_lazy_modules(monkeypatch):
    """speechbrain (imported by the speaker tests of the same session) puts lazy modules in sys.modules that raise
    ImportError on any attribute for optional packages it lacks (k2); hypothesis reads ``__file__`` of every module
    in sys.modules. Hide the unloaded lazy ones for this test."""
    for name, module in list(sys.modules.items()):
        if type(module).__module__ == "speechbrain.utils.importutils" and not getattr(module, "lazy_module", None):
            monkeypatch.delitem(sys.modules, name)


def check(segments, text: str) -> None:
    last = 0
    for seg in segments:
        check_readings(seg)
        assert last <= seg.span[0] <= seg.span[1] <= len(text)
        last = seg.span[1]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(text=TEXT, cuts=st.lists(st.integers(0, 120), max_size=6), phoneme_mode=st.booleans(),
       language=st.sampled_from(["", "auto", "zh", "en"]))
def test_any_text_gives_segments_or_invalid_argument(engine, text, cuts, phoneme_mode, language):
    try:
        check(engine.analyze(text, language, phoneme_mode), text)
    except InvalidArgument as exc:
        assert exc.field == "text" and exc.message.startswith("text: ")
    stream = engine.stream(language, phoneme_mode)
    bounds = sorted({0, len(text), *[c for c in cuts if c <= len(text)]})
    try:
        segments = []
        for a, b in zip(bounds, bounds[1:]):
            segments += stream.push(text[a:b])
        segments += stream.flush()
        check(segments, text)
    except InvalidArgument as exc:
        assert exc.field == "text" and exc.message.startswith("text: ")
