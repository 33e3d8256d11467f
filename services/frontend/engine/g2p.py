"""G2P for one normalized segment: tokens → Words with engine-neutral readings (zh via jieba + pypinyin + tone sandhi
+ erhua, en via CMUdict and the tech lexicon as ARPAbet pieces). Each decoder engine makes its own symbols from them.

Reported pinyin is the SURFACE form (after tone sandhi), i.e. what is spoken; ``citation`` is the same syllables
before sandhi. An erhua 儿 is ``r5`` in both (erhua.py).
Sandhi rules (applied to model readings only; dictionary and inline readings are taken as final):
  * 不: bu2 before a tone-4 syllable, bu5 between two identical syllables (是不是), else bu4.
  * 一: yi1 when read as a digit/ordinal (第一, 十一, 一九九零, 一点五, 一月, word-final 统一/万一),
    yi5 between identical syllables (看一看), else yi2 before tone 4/5 and yi4 before tones 1-3.
  * 3-3: inside a jieba word every T3 followed by an (underlying) T3 becomes T2, left to right — so a
    three-syllable word gets the 2+1 reading 展览馆 zhan2 lan2 guan3; across word boundaries (same run, no
    punctuation between) the rule is applied right to left on surface tones: 我很好 → wo3 hen2 hao3.
"""
from __future__ import annotations

import functools
import re
import threading
import unicodedata
from dataclasses import dataclass

from shared.pinyin import ERHUA, is_valid_syllable, normalize_syllable, valid_bases

from .dictionary import ReplaceDictionary
from .english import EnglishG2P
from .erhua import erhua_positions
from .polyphone import Disambiguator
from .tech_words import is_tech_word
from .types import Word

_TOKEN_RE = re.compile(
    r"(?P<zh>[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]+)"
    r"|(?P<en>[A-Za-z\u00c0-\u024f]+(?:['’][A-Za-z]+)*(?:-[A-Za-z]+)*)"
    r"|(?P<ws>\s+)"
    r"|(?P<ch>.)", re.S)

# marks that are punctuation though Unicode files them elsewhere
MARKS = frozenset("~")

_NUMERALS = set("零一二三四五六七八九十百千万亿两")
_DIGIT_CHARS = set("零〇一二三四五六七八九")

_jieba_lock = threading.Lock()
_jieba = None
_added_words: dict[str, object] = {}


def jieba_tokenizer():
    global _jieba
    if _jieba is None:
        with _jieba_lock:
            if _jieba is None:
                import jieba

                jieba.setLogLevel(60)
                jieba.initialize()
                _jieba = jieba.dt
    return _jieba


def sync_jieba_words(words) -> None:
    """Make jieba keep every dictionary word together; undo words a previous dictionary added."""
    tk = jieba_tokenizer()
    with _jieba_lock:
        _prepare_run.cache_clear()
        for w in list(_added_words):
            if w not in words:
                old = _added_words.pop(w)
                if old is None:
                    tk.del_word(w)
                else:
                    tk.add_word(w, old)
        for w in words:
            if w not in _added_words and len(w) > 1:
                _added_words[w] = tk.FREQ.get(w) or None
                tk.add_word(w, max(tk.FREQ.get(w) or 0, 200000))
        _prepare_run.cache_clear()


def _t3(items: list[str]) -> list[str]:
    from pypinyin import Style, lazy_pinyin

    return lazy_pinyin(items, style=Style.TONE3, neutral_tone_with_five=True, errors=lambda s: [""] * len(s))


def _phrases() -> dict:
    from pypinyin.constants import PHRASES_DICT

    return PHRASES_DICT


def _subwords(word: str) -> list[str]:
    """A jieba word pypinyin's phrase table lacks → its longest known sub-words (变得 → 变 得, 适应性 → 适应 性)."""
    from pypinyin.seg.mmseg import seg

    return list(seg.cut(word))


@functools.lru_cache(maxsize=65536)
def _word_reading(word: str) -> tuple[tuple[str, ...], tuple[bool, ...]]:
    """Phrase-table reading of one jieba word, and per character whether a phrase of >= 2 characters gave it.

    A word missing from the phrase table is read by its known sub-words, not character by character. pypinyin reads
    each item of a word list on its own, so a per-word cache gives exactly what one call over the whole list gives.
    """
    table = _phrases()
    pieces = _subwords(word) if len(word) > 1 and word not in table else [word]
    flat = _t3(pieces)
    if len(flat) != len(word):   # alignment lost (should not happen): per character
        flat = [(_t3([c]) or [""])[0] for c in word]
    return tuple(flat), tuple(len(p) > 1 and p in table for p in pieces for _ in p)


def _lazy_pinyin(words: list[str]) -> tuple[list[list[str]], list[list[bool]]]:
    """Phrase-table readings per word, and per character whether a phrase of >= 2 characters gave it."""
    out, flags = [], []
    for w in words:
        r, f = _word_reading(w)
        out.append(list(r))
        flags.append(list(f))
    return out, flags


def _tone(s: str) -> int:
    return int(s[-1]) if s and s[-1] in "12345" else 0


def _with_tone(s: str, tone: int) -> str:
    return s[:-1] + str(tone)


def apply_sandhi(chars: str, syl: list[str], fixed: list[bool], word_ids: list[int]) -> list[str]:
    n = len(chars)
    syl = list(syl)
    for i, c in enumerate(chars):  # underlying tones for 一/不 (pypinyin's phrase data is inconsistent)
        if fixed[i] or not syl[i]:
            continue
        if c == "一" and syl[i][:-1] == "yi":
            syl[i] = "yi1"
        elif c == "不" and syl[i][:-1] == "bu":
            syl[i] = "bu4"
    under = list(syl)
    for i, c in enumerate(chars):
        if fixed[i] or not syl[i] or c not in "一不":
            continue
        prev_c = chars[i - 1] if i > 0 else ""
        next_c = chars[i + 1] if i + 1 < n else ""
        next_t = _tone(under[i + 1]) if i + 1 < n else 0
        if c == "不":
            if prev_c and prev_c == next_c:
                syl[i] = "bu5"
            elif next_t == 4:
                syl[i] = "bu2"
            continue
        # 一
        word_end = i + 1 >= n or word_ids[i + 1] != word_ids[i]
        word_len = sum(1 for w in word_ids if w == word_ids[i])
        if prev_c and prev_c == next_c and prev_c not in _NUMERALS:
            syl[i] = "yi5"
        elif not next_c or next_c in _DIGIT_CHARS or next_c == "十" or prev_c == "第":
            continue
        elif prev_c and (prev_c in _DIGIT_CHARS or prev_c in "十两"):
            continue
        elif prev_c and prev_c in "百千万亿" and (not next_c or next_c not in _NUMERALS):
            continue
        elif word_end and word_len > 1:
            continue
        elif next_c and next_c in "月日号" and not (prev_c and prev_c in _NUMERALS) and word_len <= 2:
            continue
        elif next_c == "点" and i + 2 < n and chars[i + 2] in _DIGIT_CHARS:
            continue
        elif next_t in (4, 5):
            syl[i] = "yi2"
        elif next_t in (1, 2, 3):
            syl[i] = "yi4"
    # 3-3 inside words, left to right on underlying tones
    t3 = [_tone(s) for s in syl]
    for i in range(n - 1):
        if word_ids[i] == word_ids[i + 1] and not fixed[i] and t3[i] == 3 and _tone(syl[i + 1]) == 3 and syl[i]:
            syl[i] = _with_tone(syl[i], 2)
    # 3-3 across word boundaries, right to left on surface tones
    for i in range(n - 2, -1, -1):
        if word_ids[i] != word_ids[i + 1] and not fixed[i] and syl[i] and _tone(syl[i]) == 3 \
                and _tone(syl[i + 1]) == 3:
            syl[i] = _with_tone(syl[i], 2)
    return syl


@dataclass
class ZhRun:
    text: str
    words: list[str]          # jieba words
    syl: list[str]            # phrase-table reading per character ("" = none)
    wid: list[int]            # word index per character
    in_phrase: list[bool]     # the reading came from a phrase of >= 2 characters in pypinyin's table


@functools.lru_cache(maxsize=8192)
def _prepare_run(run: str) -> ZhRun:
    words = jieba_tokenizer().lcut(run, HMM=True) if len(run) > 1 else [run]
    readings, flags = _lazy_pinyin(words)
    syl, wid, in_phrase = [], [], []
    for k, (w, r, f) in enumerate(zip(words, readings, flags)):
        for s, fl in zip(r, f):
            syl.append(normalize_syllable(s) if s and is_valid_syllable(s) else "")
            wid.append(k)
            in_phrase.append(fl)
    return ZhRun(run, words, syl, wid, in_phrase)


class G2P:
    def __init__(self, english: EnglishG2P | None = None, polyphones: Disambiguator | None | bool = True):
        self.english = english or EnglishG2P()
        self.polyphones = Disambiguator() if polyphones is True else (polyphones or None)

    def warmup(self) -> None:
        jieba_tokenizer()
        valid_bases()
        _lazy_pinyin(["你好", "世界"])
        self.english.load()
        if self.polyphones is not None:
            self.polyphones.warmup()

    def clear_result_caches(self, per_word: bool = False) -> None:
        """Forget cached results of whole runs and segments (benchmarks of new text); ``per_word``: the per-word
        phrase-table readings too."""
        _prepare_run.cache_clear()
        if per_word:
            _word_reading.cache_clear()
            self.english.clear_cache()
        if self.polyphones is not None:
            self.polyphones.clear_cache()

    @staticmethod
    def prepare_run(run: str) -> ZhRun:
        """jieba words of one run of Chinese characters and their phrase-table (citation) readings (cached; the
        cache is cleared when the replace dictionary changes jieba's words). The result is shared: never mutate it."""
        return _prepare_run(run)

    def zh_run(self, run: str, offset: int, dictionary: ReplaceDictionary,
               forced: dict[int, str], prepared: ZhRun | None = None,
               decided: dict[int, str] | None = None) -> list[Word]:
        """One run of Chinese characters at ``offset`` of the segment. ``decided``: readings chosen in context
        (segment position → syllable) by the polyphone disambiguator; dictionary and inline readings win over them."""
        prepared = prepared or self.prepare_run(run)
        words, syl, wid = prepared.words, list(prepared.syl), prepared.wid
        fixed = [False] * len(syl)
        text = run
        for pos, p in (decided or {}).items():
            if 0 <= pos - offset < len(text) and syl[pos - offset]:
                syl[pos - offset] = p
        # dictionary: char rules, then whole words (longest match), then inline readings
        for pos, (p, _spec) in dictionary.char_overrides(text).items():
            syl[pos], fixed[pos] = p, True
        if dictionary.words:
            maxlen = min(max(map(len, dictionary.words)), 16) if len(dictionary.words) < 64 else 16
            i = 0
            while i < len(text):
                for L in range(min(maxlen, len(text) - i), 1, -1):
                    entry = dictionary.words.get(text[i:i + L])
                    if entry:
                        for j, p in enumerate(entry[0]):
                            syl[i + j], fixed[i + j] = p, True
                        i += L - 1
                        break
                i += 1
        for pos, p in forced.items():
            if 0 <= pos - offset < len(text):
                syl[pos - offset], fixed[pos - offset] = p, True
        for i, c in enumerate(text):   # 一 and 不 have one citation tone (the phrase data is not consistent)
            if not fixed[i] and syl[i][:-1] == {"一": "yi", "不": "bu"}.get(c):
                syl[i] = "yi1" if c == "一" else "bu4"
        for i in erhua_positions(text, wid):     # erhua 儿: the r-colouring of the syllable before it
            if not fixed[i] and syl[i][:-1] == "er":
                syl[i] = ERHUA
        citation = list(syl)
        syl = apply_sandhi(text, syl, fixed, wid)
        out, k = [], 0
        for w in words:
            ps = [s for s in syl[k:k + len(w)] if s]
            cs = [s for s in citation[k:k + len(w)] if s]
            out.append(Word(text=w, lang="zh", pinyin=ps, span=(offset + k, offset + k + len(w)), citation=cs))
            k += len(w)
        return out

    def words(self, text: str, dictionary: ReplaceDictionary, forced: dict[int, str] | None = None,
              context: tuple[str, str] | None = None, zh: bool = True) -> list[Word]:
        """``context``: (text before, text after) the segment, seen by the polyphone disambiguator only. ``zh``: the
        segment is read in Chinese (English words get the tech lexicon's Chinese readings: App "ep")."""
        forced = forced or {}
        out: list[Word] = []
        tokens = list(_TOKEN_RE.finditer(text))
        runs = {m.start(): self.prepare_run(m.group()) for m in tokens if m.lastgroup == "zh"}
        decided = {}
        if self.polyphones is not None and runs:
            left, right = context or ("", "")
            ctx = {a + len(left): r for a, r in runs.items()}
            decided = {p - len(left): r for p, r in self.polyphones.decide(left + text + right, ctx).items()
                       if len(left) <= p < len(left) + len(text)}
        for m in tokens:
            kind, tok, a, b = m.lastgroup, m.group(), m.start(), m.end()
            if kind == "zh":
                out.extend(self.zh_run(tok, a, dictionary, forced, runs[a], decided))
            elif kind == "en":
                for piece, pa in english_words(tok, a):
                    if piece == "-":
                        out.append(Word(text=piece, lang="punct", span=(pa, pa + 1)))
                    else:
                        out.append(Word(text=piece, lang="en", span=(pa, pa + len(piece)),
                                        english=self.english.word(piece, zh=zh)))
            elif kind == "ws":
                continue
            else:
                cat = unicodedata.category(tok)
                out.append(Word(text=tok, lang="punct" if cat[0] == "P" or tok in MARKS else "other", span=(a, b)))
        return out


def english_words(token: str, start: int) -> list[tuple[str, int]]:
    """An English token → its words and their offsets. A hyphenated token is one word where the tech lexicon knows it
    (Wi-Fi, e-mail, Type-C), else its parts with the hyphens between them (well-known → well, -, known)."""
    if "-" not in token or is_tech_word(token):
        return [(token, start)]
    parts = token.split("-")
    offsets, k = [], start
    for p in parts:
        offsets.append(k)
        k += len(p) + 1
    out, i = [], 0
    while i < len(parts):
        j = next((j for j in range(len(parts), i + 1, -1) if is_tech_word("-".join(parts[i:j]))), i + 1)
        if out:
            out.append(("-", offsets[i] - 1))
        out.append(("-".join(parts[i:j]), offsets[i]))
        i = j
    return out


def language_spans(words: list[Word]) -> list[tuple[str, int, int]]:
    spans: list[list] = []
    for w in words:
        if w.lang not in ("zh", "en"):
            continue
        if spans and spans[-1][0] == w.lang:
            spans[-1][2] = w.span[1]
        else:
            spans.append([w.lang, w.span[0], w.span[1]])
    return [tuple(s) for s in spans]

