"""The public view of the frontend's engine-neutral readings (tts.v1 Word.phonemes, TextSegment.phonemes, batch
results' ``phonemes``): the same whatever model speaks. A Chinese word: its pinyin, spoken tones with tone digits
("ni2 hao3"; an erhua 儿 "r5"); an English word: the CMUdict ARPAbet of its pieces, joined by " | " ("AY1 | F OW2 N");
a mark: nothing."""
from __future__ import annotations


def word_reading(word) -> str:
    """One frontend.v1.Word as tts.v1 Word.phonemes."""
    if word.lang == "zh":
        return " ".join(word.pinyin)
    if word.lang == "en":
        return " | ".join(p.arpabet for p in word.english)
    return ""


def segment_reading(segment) -> str:
    """One frontend.v1.Segment as tts.v1 TextSegment.phonemes: its words' readings joined by a space."""
    return " ".join(r for r in map(word_reading, segment.words) if r)
