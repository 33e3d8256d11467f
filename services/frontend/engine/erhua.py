"""Erhua: which 儿 colours the syllable before it (那儿 nàr, 一会儿 yīhuìr, 玩儿 wánr) and which is a syllable of
its own (女儿 nǚ'ér, 儿子 érzi). Decided here, once, for every engine: an erhua 儿 is read ``r5`` (shared.pinyin.ERHUA)
in both ``pinyin`` and ``citation_pinyin``; a full one keeps its reading (er2).

The rule, over a run of Chinese characters and its jieba words:

1. 儿 after no Chinese character (the start of a run) is a syllable.
2. 儿 inside one of the ``FULL`` words below (within one jieba word) is a syllable: words where 儿 means child or son (女儿, 婴儿, 幼儿, 孤儿,
   健儿, 男儿, 胎儿 …, so also 幼儿园, 婴儿车, 新生儿) and words that begin with 儿 (儿子, 儿童, 儿女, 儿科 …, so also
   留守儿童 read as one jieba word).
3. 儿 that begins a jieba word of two or more characters (儿子们, 儿童节) is a syllable.
4. 儿 standing alone as a word after 的/我/你/他/她 … (我的儿, 妻儿) is a syllable: the son, the child.
5. Every other 儿 after a Chinese character is erhua: the suffix of its word (那儿, 哪儿, 这儿, 玩儿, 一点儿, 一会儿,
   小孩儿, 花儿, 事儿, 哥儿们, 今儿个) or a word of its own after one (一下 | 儿).

Readings from the replace dictionary or inline readings are kept as given (no rule applies to them).
"""
from __future__ import annotations

ER = "儿"

FULL = frozenset({
    # 儿 = child, son: a syllable of its own
    "女儿", "婴儿", "幼儿", "孤儿", "健儿", "男儿", "胎儿", "宠儿", "患儿", "少儿", "孙儿", "侄儿", "小儿", "弃儿",
    "育儿", "养儿", "生儿", "产儿", "妻儿", "乞儿", "聋儿", "混血儿", "幸运儿", "宁馨儿", "托儿所",
    # a transliteration
    "笛卡儿",
    # words that begin with 儿
    "儿子", "儿童", "儿女", "儿孙", "儿媳", "儿科", "儿时", "儿歌", "儿戏", "儿化", "儿郎",
})
# a 儿 standing alone as a word right after one of these is the son / the child (我的儿, 妻儿)
ALONE_AFTER = frozenset("的我你他她俺吾其和与及")


def _in_full_word(text: str, word_ids: list[int], i: int) -> bool:
    """儿 at ``i`` is inside an occurrence of a FULL word that lies within one jieba word (小孩儿|女儿 has no 儿女)."""
    for w in FULL:
        for k, c in enumerate(w):
            a = i - k
            if c == ER and a >= 0 and text[a:a + len(w)] == w and len(set(word_ids[a:a + len(w)])) == 1:
                return True
    return False


def erhua_positions(text: str, word_ids: list[int]) -> list[int]:
    """Positions of the erhua 儿 in a run of Chinese characters (``word_ids``: the jieba word of each character)."""
    out = []
    for i, c in enumerate(text):
        if c != ER or i == 0:
            continue
        starts_word = word_ids[i] != word_ids[i - 1]
        word_len = word_ids.count(word_ids[i])
        if _in_full_word(text, word_ids, i):
            continue
        if starts_word and word_len > 1:
            continue
        if starts_word and text[i - 1] in ALONE_AFTER:
            continue
        out.append(i)
    return out
