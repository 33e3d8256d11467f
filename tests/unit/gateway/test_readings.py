"""The public readings (tts.v1 Word.phonemes, TextSegment.phonemes, batch results): engine-neutral, from the
frontend's words — pinyin with tone digits for Chinese, ARPAbet pieces for English, nothing for marks."""
from services.gateway.readings import segment_reading
from services.gateway.server import segment_to_public
from tts.frontend.v1 import frontend_pb2 as fe


def segment():
    return fe.Segment(index=0, text="那儿有Wi-Fi和USB。", normalized="那儿有Wi-Fi和USB。", words=[
        fe.Word(text="那儿", lang="zh", pinyin=["na4", "r5"], citation_pinyin=["na4", "r5"]),
        fe.Word(text="有", lang="zh", pinyin=["you3"], citation_pinyin=["you3"]),
        fe.Word(text="Wi-Fi", lang="en", english=[fe.Pronunciation(text="Wi", arpabet="W AY1"),
                                                  fe.Pronunciation(text="Fi", arpabet="F AY2")]),
        fe.Word(text="和", lang="zh", pinyin=["he2"], citation_pinyin=["he2"]),
        fe.Word(text="USB", lang="en", english=[fe.Pronunciation(text=c, arpabet=a, spelled=True)
                                                for c, a in (("U", "Y UW1"), ("S", "EH1 S"), ("B", "B IY1"))]),
        fe.Word(text="。", lang="punct")])


def test_words_and_segment_carry_the_neutral_reading():
    public = segment_to_public(segment())
    assert [w.phonemes for w in public.words] == ["na4 r5", "you3", "W AY1 | F AY2", "he2",
                                                  "Y UW1 | EH1 S | B IY1", ""]
    assert public.phonemes == "na4 r5 you3 W AY1 | F AY2 he2 Y UW1 | EH1 S | B IY1"
    assert list(public.words[0].pinyin) == ["na4", "r5"]


def test_batch_results_use_the_same_reading():
    assert segment_reading(segment()) == segment_to_public(segment()).phonemes
