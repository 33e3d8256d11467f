"""Kokoro's symbols from the frontend's engine-neutral readings: a segment's words → one phoneme string in Kokoro
v1.0's vocabulary (misaki's conventions).

- Mandarin (``Word.pinyin``, spoken tones): the pinyin-to-ipa tables (first variant of each entry), misaki zh
  "legacy" style: initials, finals and a few whole syllables map to IPA; the tone arrow (→ ↗ ↓ ↘, none for the
  neutral tone) goes right after the syllable's nucleus, i.e. before a coda n/ŋ. An erhua ``r5`` r-colours the
  syllable before it: ɻ after the nucleus, which drops a coda n and the glide of ai/ei (玩儿 wa↗ɻ, 一会儿 xwə↘ɻ, 一点儿
  tja↓ɻ); an apical vowel becomes ɚ (事儿 ʂɚ↘).
- English (``Word.english``, ARPAbet pieces): misaki's US symbols (diphthongs A=eɪ I=aɪ O=oʊ W=aʊ Y=ɔɪ, affricates
  ʤ ʧ, ɹ, ɡ; stress marks ˈ ˌ right before the stressed vowel; unstressed AH → ə, ER → əɹ). A spelled letter is
  misaki's name of the letter (W dˈʌbᵊlju), letters spelled one after the other are separated by a space, other
  pieces of a word are joined (iPhone ˈIfˈOn); the article "a" is ɐ.
- Marks: ``PUNCT_MAP``; words are joined by a space, a mark sticks to the word before it (an opening one to the
  word after it). Anything outside the vocabulary is dropped (the model would drop it silently).
"""
from __future__ import annotations

from functools import lru_cache

from shared.pinyin import ERHUA, parse

from ..base import Pronunciation, SegmentInput, WordInput

# -- Mandarin ---------------------------------------------------------------------------------------------------
TONE_MARKS = {1: "→", 2: "↗", 3: "↓", 4: "↘", 5: ""}

INITIALS = {
    "b": "p", "p": "pʰ", "m": "m", "f": "f", "d": "t", "t": "tʰ", "n": "n", "l": "l",
    "g": "k", "k": "kʰ", "h": "x", "j": "ʨ", "q": "ʨʰ", "x": "ɕ",
    "zh": "ꭧ", "ch": "ꭧʰ", "sh": "ʂ", "r": "ɻ", "z": "ʦ", "c": "ʦʰ", "s": "s",
}
# final → (onset glide, nucleus, coda); the tone mark goes after the nucleus.
FINALS = {
    "a": ("", "a", ""), "ai": ("", "ai", ""), "an": ("", "a", "n"), "ang": ("", "a", "ŋ"), "ao": ("", "au", ""),
    "e": ("", "ɤ", ""), "ei": ("", "ei", ""), "en": ("", "ə", "n"), "eng": ("", "ə", "ŋ"),
    "i": ("", "i", ""), "ia": ("j", "a", ""), "ian": ("j", "ɛ", "n"), "iang": ("j", "a", "ŋ"),
    "iao": ("j", "au", ""), "ie": ("j", "e", ""), "in": ("", "i", "n"), "iou": ("j", "ou", ""),
    "ing": ("", "i", "ŋ"), "iong": ("j", "ʊ", "ŋ"), "ong": ("", "ʊ", "ŋ"), "ou": ("", "ou", ""),
    "u": ("", "u", ""), "uei": ("w", "ei", ""), "ua": ("w", "a", ""), "uai": ("w", "ai", ""),
    "uan": ("w", "a", "n"), "uen": ("w", "ə", "n"), "uang": ("w", "a", "ŋ"), "ueng": ("w", "ə", "ŋ"),
    "uo": ("w", "o", ""), "o": ("w", "o", ""),
    "ü": ("", "y", ""), "üe": ("ɥ", "e", ""), "üan": ("ɥ", "ɛ", "n"), "ün": ("", "y", "n"),
}
# whole syllables without an initial/final analysis
SPECIAL = {
    "er": ("", "ɚ", ""), "m": ("", "m", ""), "n": ("", "n", ""), "ng": ("", "ŋ", ""),
    "hm": ("h", "m", ""), "hng": ("h", "ŋ", ""), "o": ("", "ɔ", ""), "ê": ("", "ɛ", ""), "io": ("j", "ɔ", ""),
}
APICAL = ("zh", "ch", "sh", "r", "z", "c", "s")
# erhua: the nucleus as r-colouring leaves it (the glide of ai/ei goes, a high vowel gets a schwa), before ɻ
_ERHUA_NUCLEUS = {"ai": "a", "ei": "ə", "ɛ": "a", "i": "iə", "y": "yə"}


@lru_cache(maxsize=4096)
def syllable(syl: str, erhua: bool = False) -> str:
    """'zhong1' → 'ꭧʊ→ŋ'; with ``erhua`` r-coloured ('wan2' → 'wa↗ɻ'). Raises ValueError for what is not pinyin
    with a tone digit."""
    ini, fin, tone = parse(syl)
    mark = TONE_MARKS[tone]
    if not ini and fin in SPECIAL and (fin not in FINALS or fin == "o"):
        glide, nucleus, coda = SPECIAL[fin]
        if erhua and nucleus != "ɚ":
            return f"{glide}{nucleus}{mark}{coda}ɻ"
        return f"{glide}{nucleus}{mark}{coda}"
    if ini in APICAL and fin == "i":
        return f"{INITIALS[ini]}{'ɚ' if erhua else 'ɨ'}{mark}"
    glide, nucleus, coda = FINALS[fin]
    if erhua:
        nucleus = _ERHUA_NUCLEUS.get(nucleus, nucleus)
        return f"{INITIALS.get(ini, '')}{glide}{nucleus}{mark}{'' if coda == 'n' else coda}ɻ"
    return f"{INITIALS.get(ini, '')}{glide}{nucleus}{mark}{coda}"


def mandarin(pinyin: list[str]) -> str:
    """One word's syllables (spoken tones), joined; ``r5`` r-colours the syllable before it; what is not pinyin is
    left out."""
    syllables: list[list] = []
    for s in pinyin:
        if s == ERHUA:
            if syllables:
                syllables[-1][1] = True
            continue
        syllables.append([s, False])
    out = []
    for s, erhua in syllables:
        try:
            out.append(syllable(s, erhua))
        except ValueError:
            pass
    return "".join(out)


# -- English ------------------------------------------------------------------------------------------------------
_VOWELS = {
    "AA": "ɑ", "AE": "æ", "AH": "ʌ", "AO": "ɔ", "AW": "W", "AY": "I", "EH": "ɛ", "ER": "ɜɹ", "EY": "A",
    "IH": "ɪ", "IY": "i", "OW": "O", "OY": "Y", "UH": "ʊ", "UW": "u",
}
_CONSONANTS = {
    "B": "b", "CH": "ʧ", "D": "d", "DH": "ð", "F": "f", "G": "ɡ", "HH": "h", "JH": "ʤ", "K": "k", "L": "l",
    "M": "m", "N": "n", "NG": "ŋ", "P": "p", "R": "ɹ", "S": "s", "SH": "ʃ", "T": "t", "TH": "θ", "V": "v",
    "W": "w", "Y": "j", "Z": "z", "ZH": "ʒ",
}
# misaki's names of the letters (a spelled piece)
LETTERS = {
    "a": "ˈA", "b": "bˈi", "c": "sˈi", "d": "dˈi", "e": "ˈi", "f": "ˈɛf", "g": "ʤˈi", "h": "ˈAʧ", "i": "ˈI",
    "j": "ʤˈA", "k": "kˈA", "l": "ˈɛl", "m": "ˈɛm", "n": "ˈɛn", "o": "ˈO", "p": "pˈi", "q": "kjˈu",
    "r": "ˈɑɹ", "s": "ˈɛs", "t": "tˈi", "u": "jˈu", "v": "vˈi", "w": "dˈʌbᵊlju", "x": "ˈɛks", "y": "wˈI",
    "z": "zˈi",
}
ARTICLE_A = "ɐ"                  # misaki's unstressed article "a"


def arpabet_to_misaki(phones: list[str]) -> str:
    out = []
    for ph in phones:
        stress = ph[-1] if ph[-1].isdigit() else ""
        core = ph.rstrip("012")
        if core in _VOWELS:
            sym = _VOWELS[core]
            if stress == "0":
                if core == "AH":
                    sym = "ə"
                elif core == "ER":
                    sym = "əɹ"
            mark = "ˈ" if stress == "1" else "ˌ" if stress == "2" else ""
            out.append(mark + sym)
        elif core in _CONSONANTS:
            out.append(_CONSONANTS[core])
    return "".join(out)


def piece(p: Pronunciation) -> str:
    name = p.text.lower()
    if p.spelled and name in LETTERS:
        return LETTERS[name]
    if not p.spelled and name == "a" and p.arpabet == "AH0":
        return ARTICLE_A
    return arpabet_to_misaki(p.arpabet.split())


def english(pieces: list[Pronunciation]) -> str:
    out, prev_spelled = "", False
    for p in pieces:
        if out and p.spelled and prev_spelled:
            out += " "
        out += piece(p)
        prev_spelled = p.spelled
    return out


# -- marks, the vocabulary, the whole segment ------------------------------------------------------------------------
PUNCT_MAP = {
    "，": ",", "、": ",", ",": ",", "。": ".", "．": ".", ".": ".", "！": "!", "!": "!", "？": "?", "?": "?",
    "：": ":", ":": ":", "；": ";", ";": ";", "…": "…", "—": "—", "–": "—", "“": "“", "”": "”", "\"": "\"",
    "「": "“", "」": "”", "『": "“", "』": "”", "《": "“", "》": "”", "【": "“", "】": "”", "«": "“", "»": "”",
    "（": "(", "(": "(", "）": ")", ")": ")", "‘": "", "’": "", "'": "", "·": "", "-": "", "~": "",
}

# Kokoro v1.0's phoneme vocabulary (characters the model knows; anything else is silently dropped by it)
KOKORO_VOCAB = frozenset(
    ';:,.!?—…"()“” ̃ʣʥʦʨᵝꭧAIOQSTWYᵊabcdefhijklmnopqrstuvwxyzɑɐɒæβɔɕçɖðʤəɚɛɜɟɡɥɨɪʝɯɰŋɳɲɴøɸθœɹɾɻʁɽʂʃʈʧʊʋʌɣχʎʒʔɤˈˌːʰʲ↓→↗↘ᵻ'
)


def only_vocab(ps: str) -> str:
    return "".join(c for c in ps if c in KOKORO_VOCAB)


def word(w: WordInput, pinyin: list[str] | None = None) -> str:
    """One word in Kokoro's symbols (``pinyin``: its syllables, when erhua moved one across words)."""
    if w.lang == "zh":
        return only_vocab(mandarin(w.pinyin if pinyin is None else pinyin))
    if w.lang == "en":
        return only_vocab(english(w.english))
    if w.lang == "punct":
        return only_vocab(PUNCT_MAP.get(w.text, ""))
    return ""


def join(words: list[tuple[str, str]]) -> str:
    """(lang, phonemes) per word → the segment's string: words separated by a space, a mark after the word before it
    (an opening quote or bracket before the word after it)."""
    out = ""
    for lang, ps in words:
        if not ps:
            continue
        if lang == "punct":
            if ps in "“(":
                out += (" " if out and not out.endswith(" ") else "") + ps
            else:
                out = out.rstrip(" ") + ps + " "
        else:
            if out and not out.endswith((" ", "“", "(")):
                out += " "
            out += ps
    return only_vocab(out.strip())


def segment_phonemes(segment: SegmentInput) -> str:
    """The segment's words in Kokoro's symbols, joined. An erhua ``r5`` that begins a word (一下 | 儿) r-colours the
    last syllable of the Chinese word before it."""
    pinyin = [list(w.pinyin) for w in segment.words]
    for k, w in enumerate(segment.words):
        if k and w.lang == "zh" and pinyin[k][:1] == [ERHUA] and segment.words[k - 1].lang == "zh" and pinyin[k - 1]:
            pinyin[k - 1].append(ERHUA)
            pinyin[k] = pinyin[k][1:]
    return join([(w.lang, word(w, p)) for w, p in zip(segment.words, pinyin)])


# -- which character each symbol says (alignment) --------------------------------------------------------------------
Owner = tuple  # (start, end, silent): the stretch of the segment's normalized text a symbol says


def _owned_word(w: WordInput, pinyin: list[str], positions: list[int]) -> list[tuple[str, Owner | None]]:
    """``word(w, pinyin)`` symbol by symbol, each with the normalized-text stretch it says: a Chinese syllable its
    character (an erhua ɻ the 儿 it comes from), an English word the whole word, a mark the mark (silent)."""
    span = w.span or (0, len(w.text))
    if w.lang == "zh":
        if len(positions) != len(pinyin):                 # readings not one per character: the whole word
            positions = [None] * len(pinyin)
        out: list = []
        syllables: list[list] = []                        # [syllable, erhua, own position, 儿 position]
        for s, at in zip(pinyin, positions):
            if s == ERHUA:
                if syllables:
                    syllables[-1][1], syllables[-1][3] = True, at
                continue
            syllables.append([s, False, at, None])
        for s, erhua, at, er_at in syllables:
            try:
                text = syllable(s, erhua)
            except ValueError:
                continue
            own = (at, at + 1, False) if at is not None else (span[0], span[1], False)
            er = (er_at, er_at + 1, False) if er_at is not None else own
            out += [(c, er if erhua and k == len(text) - 1 and c == "ɻ" else own) for k, c in enumerate(text)]
        return [(c, o) for c, o in out if c in KOKORO_VOCAB]
    if w.lang == "en":
        return [(c, (span[0], span[1], False)) for c in only_vocab(english(w.english))]
    if w.lang == "punct":
        return [(c, (span[0], span[1], True)) for c in only_vocab(PUNCT_MAP.get(w.text, ""))]
    return []


def segment_phonemes_owned(segment: SegmentInput) -> tuple[str, list[Owner | None]]:
    """``segment_phonemes(segment)`` and, for each of its symbols, the stretch of the normalized text it says (None:
    a space between words). The same string, built the same way (a test checks they agree)."""
    pinyin = [list(w.pinyin) for w in segment.words]
    positions = [[(w.span or (0, 0))[0] + i for i in range(len(w.pinyin))] for w in segment.words]
    for k, w in enumerate(segment.words):
        if k and w.lang == "zh" and pinyin[k][:1] == [ERHUA] and segment.words[k - 1].lang == "zh" and pinyin[k - 1]:
            pinyin[k - 1].append(ERHUA)
            positions[k - 1].append(positions[k][0])
            pinyin[k], positions[k] = pinyin[k][1:], positions[k][1:]
    out: list[tuple[str, Owner | None]] = []
    for w, p, pos in zip(segment.words, pinyin, positions):
        ps = _owned_word(w, p, pos)
        if not ps:
            continue
        text = "".join(c for c, _ in ps)
        if w.lang == "punct":
            if text in "“(":
                if out and out[-1][0] != " ":
                    out.append((" ", None))
                out += ps
            else:
                while out and out[-1][0] == " ":
                    out.pop()
                out += ps + [(" ", None)]
        else:
            if out and out[-1][0] not in (" ", "“", "("):
                out.append((" ", None))
            out += ps
    while out and out[0][0].isspace():
        out.pop(0)
    while out and out[-1][0].isspace():
        out.pop()
    return "".join(c for c, _ in out), [o for _, o in out]
