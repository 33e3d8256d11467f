"""The "LM text" view: a segment as the published GLM-TTS LM was trained to read it.

Our frontend decides what the text says (numbers, dates, codes, units, abbreviations; which reading a polyphone
has). This module only re-writes that decision in the form the published inference hands its LM
(zai-org/GLM-TTS ``TextFrontEnd.text_normalize`` then ``g2p_infer``), checked against the official outputs of 44
inputs in tests/data/glmtts-reference/text (tests/unit/decoder/glmtts/test_lm_text.py):

- **Text rule** (:func:`official_form`): text with Chinese characters is lower-cased, ``，`` for ``,:：;；、`` and
  ``——``, ``。`` for ``！!.…``, a half-width ``?`` for ``？``; quotes, brackets, ``*``, ``_·#`` and emoji are
  removed; runs of marks keep their first; spaces stay only between two Latin letters/digits (or after a Latin
  mark); ``噢``→``哦``, ``欸``→``诶``, ``咯`` before a mark → ``喽``; Greek letters and math symbols read in
  Chinese. Text without Chinese characters: lower-cased, ``.`` for ``!``, only ``. , ? ' : ;`` kept, hyphens
  between letters become spaces. The last mark is forced to ``。`` / ``.`` (``?`` stays), or added.
- **Phoneme rule** (:func:`lm_text`, when the tokenizer holds the phoneme tokens): every Chinese character that
  is not in the official whitelist (``G2P_able_1word.json``, 3372 characters) is replaced by the tokens of its
  reading in **citation tones** (dictionary tones, before tone sandhi: the published G2P never emits sandhi), e.g.
  银行 → ``银<|H|><|ANG2|>``; a reading whose tokens are not all in ``G2P_all_phonemes.json`` (204 tokens) keeps
  the character; the official replace dictionary (``G2P_replace_dict.jsonl``) applies first. An erhua 儿 (citation
  ``r5``: 那儿, 一会儿; no syllable, so no tokens) stays the character 儿, as the official text has it.

Deliberate differences (README, "GLM-TTS engine"): the reading is ours (the frontend's word-level G2P and the
replace dictionary), not pypinyin's, so 行长 is hang2 zhang3 and 弹钢琴 tan2; a whitelisted character whose
frontend reading is not its most common one (a dictionary or inline-phoneme override) is also given as phonemes,
so an override is never lost.
"""
from __future__ import annotations

import json
import re
import unicodedata
from functools import lru_cache
from pathlib import Path

from .phonemes import default_reading, syllable_tokens

DATA = Path(__file__).resolve().parent / "data"
PUNCT = "。？！；：、.?!;:，,"                 # the official PUNCTUATION_CHARS
_PUA = 0xE000                                 # placeholders for phonemized characters while the text rule runs


@lru_cache(maxsize=1)
def whitelist() -> frozenset[str]:
    """Characters the published G2P keeps as characters (``G2P_able_1word.json``)."""
    return frozenset(json.loads((DATA / "G2P_able_1word.json").read_text(encoding="utf-8")))


@lru_cache(maxsize=1)
def inventory() -> tuple[str, ...]:
    """The published phoneme tokens (``G2P_all_phonemes.json``): 21 initials + 183 toned finals."""
    names = json.loads((DATA / "G2P_all_phonemes.json").read_text(encoding="utf-8"))
    return tuple(f"<|{names[k]}|>" for k in sorted(names, key=int))


@lru_cache(maxsize=1)
def _replace_dict() -> tuple[tuple[str, str], ...]:
    pairs = {}
    for line in (DATA / "G2P_replace_dict.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            pairs.update(json.loads(line))
    return tuple(sorted(pairs.items(), key=lambda kv: -len(kv[0])))


@lru_cache(maxsize=1)
def _variants() -> tuple[tuple[str, str], ...]:
    out = []
    for line in (DATA / "custom_replace.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            d = json.loads(line)
            out.append((d["origin"], d["new"]))
    return tuple(out)


def is_chinese(c: str) -> bool:
    cp = ord(c)
    return 0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0xF900 <= cp <= 0xFAFF or 0x20000 <= cp <= 0x323AF


_GREEK = {"α": "阿尔法", "β": "贝塔", "γ": "伽玛", "Γ": "伽玛", "δ": "德尔塔", "Δ": "德尔塔", "ε": "艾普西龙",
          "ζ": "捷塔", "η": "依塔", "θ": "西塔", "Θ": "西塔", "ι": "艾欧塔", "κ": "喀帕", "λ": "拉姆达",
          "Λ": "拉姆达", "μ": "缪", "ξ": "克西", "π": "派", "Π": "派", "ρ": "肉", "σ": "西格玛", "Σ": "西格玛",
          "τ": "套", "φ": "服艾", "Φ": "服艾", "ψ": "普赛", "ω": "欧米伽", "Ω": "欧米伽",
          "≠": "不等于", "∈": "属于", "∉": "不属于", "∪": "并", "∩": "交", "⊥": "垂直", "∥": "平行", "∵": "因为",
          "∴": "所以", "∅": "空集"}


def _drop(c: str) -> bool:
    """Emoji and other pictographs, and invisible format characters: never spoken."""
    cat = unicodedata.category(c)
    return cat in ("So", "Sk", "Cf", "Cs") and not 0xE000 <= ord(c) <= 0xF8FF


def _spaces(text: str) -> str:
    """Keep a space only between two Latin letters/digits, or after a Latin mark before one (official rule)."""
    text = re.sub(r" +", " ", text)
    out = []
    for i, c in enumerate(text):
        if c != " ":
            out.append(c)
            continue
        prev, nxt = text[i - 1:i], text[i + 1:i + 2]
        if re.match(r"[a-zA-Z0-9.,!?;:]", prev) and re.match(r"[a-zA-Z0-9]", nxt):
            out.append(" ")
    return "".join(out)


def force_end(text: str, zh: bool | None = None) -> str:
    """The official end mark: ``?`` stays, another final mark becomes ``。``/``.``, none gets one."""
    if zh is None:
        zh = any(is_chinese(c) for c in text)
    if text and text[-1] in "？?":
        return text
    mark = "。" if zh else "."
    if text and text[-1] in PUNCT:
        return text[:-1] + mark
    return text + mark


def official_form(text: str, *, zh: bool | None = None, end_mark: bool = True) -> str:
    """Our normalized text in the published LM's form (punctuation, case, symbols; see the module docstring).
    ``zh``: whether the text counts as Chinese (default: it has a Chinese character)."""
    if zh is None:
        zh = any(is_chinese(c) for c in text)
    text = "".join(c for c in text.replace("\n", " ") if not _drop(c))
    if zh:
        for a, b in _variants():
            text = text.replace(a, b)
        text = re.sub(r"咯(?=[" + re.escape(PUNCT + "，。！？") + r"])", "喽", text)
        for a, b in _GREEK.items():
            text = text.replace(a, b)
        text = text.lower()
        text = re.sub(r"[()（）【】「」`《》『』{}\[\]‘’]", "", text)
        text = text.replace(" - ", "，").replace("——", "，")
        text = re.sub(r"[,:：;；、]+", "，", text)
        text = re.sub(r"[.…!！]+", "。", text)
        text = text.replace("？", "?")
        text = re.sub(r"[_·#*]+", "", text)
        text = re.sub(r"['\"‘’“”|]+", "", text)
    else:
        text = re.sub(r"(?<=[a-zA-Z])-(?=[a-zA-Z])", " ", text)
        text = re.sub(r"[()\[\]{}`]", "", text).replace("—", " ").replace("’", "'")
        text = re.sub(r"[^\w\s.,!?':;]", "", text).lower()
        text = re.sub(r"\s+", " ", text).replace("!", ".")
        for m in ".,?':;":
            text = re.sub(re.escape(m) + "+", m, text)
        text = re.sub(r"\s*([.,?!:;])\s*", r"\1 ", text)
    text = _spaces(text.strip())
    text = re.sub(r"([" + re.escape(PUNCT) + r"])\1+", r"\1", text)
    text = re.sub(r"([" + re.escape(PUNCT) + r"])(?=[" + re.escape(PUNCT) + r"])", "", text)
    text = text.strip()
    return force_end(text, zh) if end_mark and text else text


def _variant_map() -> dict[str, str]:
    return dict(_variants())


def _phoneme_pieces(normalized: str, words, tokens: frozenset[str]) -> dict[int, str]:
    """Position in ``normalized`` → the phoneme tokens that replace the character there."""
    out: dict[int, str] = {}
    able, variants = whitelist(), _variant_map()
    for w in words:
        span = w.span
        citation = w.citation                          # dictionary tones: the published G2P has no sandhi
        if w.lang != "zh" or not span or len(citation) != len(w.text) or normalized[span[0]:span[1]] != w.text:
            continue
        for k, (char, syl) in enumerate(zip(w.text, citation)):
            if char in variants:                       # 噢 → 哦: the official's character, with its own reading
                char = variants[char]
                syl = default_reading(char)
            if not is_chinese(char) or not syl or char in able:
                continue                               # the official keeps whitelisted characters as they are
            toks = syllable_tokens(syl)
            if toks and all(t in tokens for t in toks):
                out[span[0] + k] = "".join(toks)
    # the official replace dictionary wins where it matches: its value replaces the whole key, as written
    covered: set[int] = set()
    for key, value in _replace_dict():                 # longest keys first
        for m in re.finditer(re.escape(key), normalized):
            span = range(m.start(), m.end())
            if covered.intersection(span):
                continue
            covered.update(span)
            for p in span:
                out[p] = ""
            out[m.start()] = value
    return out


def _relabel(w, normalized: str):
    """A word whose 咯 became 喽: the new text, and 喽's reading there."""
    from dataclasses import replace

    if not w.span:
        return w
    text = normalized[w.span[0]:w.span[1]]
    cit = [default_reading(c) if c == "喽" and o == "咯" else s for c, o, s in zip(text, w.text, w.citation)]
    return replace(w, text=text, citation=cit) if len(w.citation) == len(w.text) else w


def lm_text(normalized: str, words, *, phonemes: bool = True, end_mark: bool = True) -> str:
    """The segment's text for the glmtts LM: :func:`official_form` of our normalized text, with the phoneme rule
    applied when ``phonemes`` (the tokenizer holds the published phoneme tokens)."""
    zh = any(is_chinese(c) for c in normalized)
    if zh:      # 咯 before a mark is the official's 喽 (its reading included), as 噢 is its 哦
        normalized = re.sub(r"咯(?=[" + re.escape(PUNCT) + r"])", "喽", normalized)
        words = [w if "咯" not in w.text else _relabel(w, normalized) for w in words]
    pieces = _phoneme_pieces(normalized, words, frozenset(inventory())) if phonemes else {}
    if not pieces:
        return official_form(normalized, zh=zh, end_mark=end_mark)
    marked, values = [], []
    for i, c in enumerate(normalized):
        if i in pieces:
            marked.append(chr(_PUA + len(values)))
            values.append(pieces[i])
        else:
            marked.append(c)
    text = official_form("".join(marked), zh=zh, end_mark=end_mark)
    return re.sub("[\ue000-\uf8ff]", lambda m: values[ord(m.group()) - _PUA], text)


def join_lm_texts(parts) -> str:
    """Consecutive LM texts as one: a space only between two Latin words."""
    out = ""
    for p in parts:
        if out and p and re.match(r"[A-Za-z0-9.,?;:']", out[-1]) and re.match(r"[A-Za-z0-9]", p[0]):
            out += " "
        out += p
    return out
