"""The Baker voice's input symbols, made from the frontend's engine-neutral readings.

The Baker FastSpeech2 model reads Mandarin as (initial, final+tone) pairs with prosody marks between them, as its
training labels were written (TensorFlowTTS's Baker processor): ``sil`` at both ends, ``#0`` between the syllables of
a word, ``#1`` between words, ``#3`` at a pause, an erhua syllable as its final followed by ``er5`` with no mark
between (那儿 → ``n a4 er5``), and ``eos`` last. Zero-initial syllables take ``^``. The 219 symbols have no English.

How each reading becomes symbols (the documented rule; tests/unit/decoder/fastspeech2/test_symbols.py):

* **Chinese**: one syllable per character, spoken tones (after sandhi). Every syllable our frontend can emit has a
  pair, also those the mapper's table lacks: ``m`` → ``m u``, ``n`` and ``ng`` → ``^ en`` (as the mapper's table), ``hm`` → ``h en``,
  ``hng`` → ``h en``, ``ê`` → ``^ ei``, and regular syllables outside the table (``biang``, ``din``, ``nun``, …) are
  split by the same spelling rules as the rest.
* **English inside Chinese**, said by the same voice as Mandarin speakers say it: a word in the loan-word list
  (``LOANWORDS``: OK, Wi-Fi, App, iPhone, email, …) by its list entry; a letter the frontend marks as spelled (USB,
  CA1234, iOS) by its Mandarin letter name (``LETTERS``: A → ``ei``, B → ``bi``, …); any other word from its ARPAbet
  pronunciation, syllable by syllable (``from_arpabet``: each vowel gives a syllable with tone 1 when stressed and the
  neutral tone otherwise; the consonant before it its initial; a final n/ng joins the final; other consonants a
  short neutral syllable of their own). Nothing is dropped.
* **Marks**: a pause mark (，。！？；：、… and their ASCII forms) gives ``#3`` (one for a run of them); quotes,
  brackets and other symbols give no symbol. The segment's last mark becomes the closing ``sil``.

Each symbol keeps the stretch of the segment's normalized text it voices, so the model's durations give the time of
every character (``Symbols.timings``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from shared import pinyin

from ..base import Timing, WordInput

FINALS = frozenset((
    "a ai an ang ao e ei en eng er i ia ian iang iao ie ii iii in ing iong iou o ong ou u ua uai uan uang uei uen "
    "ueng uo v van ve vn").split())
PAUSE_MARKS = frozenset("，。！？；：、…,.!?;:—")
BOUNDARY_IN_WORD, BOUNDARY_WORD, PAUSE, SILENCE, END = "#0", "#1", "#3", "sil", "eos"

# whole syllables (shared.pinyin.SPECIAL) → Baker (initial, final); those the mapper's table lacks by the nearest
_SPECIAL = {"er": ("^", "er"), "o": ("^", "o"), "io": ("^", "iou"), "m": ("m", "u"), "n": ("^", "en"),
            "ng": ("^", "en"), "hm": ("h", "en"), "hng": ("h", "en"), "ê": ("^", "ei")}
_FINAL = {"ü": "v", "üe": "ve", "üan": "van", "ün": "vn"}


def split_syllable(syllable: str) -> tuple[str, str]:
    """Pinyin with a tone digit → (Baker initial or ``^``, Baker final with its tone), from the shared split into
    initial and final (``shared.pinyin.parse``). Raises ValueError for something that is not a Mandarin syllable."""
    base, _ = pinyin.split_tone(syllable) if syllable[-1:].isdigit() else (syllable, 0)
    if base in ("lue", "nue"):                         # ü written u after l/n (the mapper's table has them)
        syllable = base.replace("ue", "ve") + syllable[-1]
    initial, final, tone = pinyin.parse(syllable)
    if not initial and final in _SPECIAL and (final not in pinyin.FINALS or final == "o"):
        ini, fin = _SPECIAL[final]
        return ini, f"{fin}{tone}"
    if final == "i" and initial in ("z", "c", "s"):
        final = "ii"
    elif final == "i" and initial in ("zh", "ch", "sh", "r"):
        final = "iii"
    final = _FINAL.get(final, final)
    if final not in FINALS:
        raise ValueError(f"no Baker final for {syllable!r}")
    return initial or "^", f"{final}{tone}"


# ---- English inside Chinese ----------------------------------------------------------------------------------------
# letter names as Mandarin speakers say them, as Baker (initial, final) pairs
LETTERS: dict[str, tuple[tuple[str, str], ...]] = {
    "a": (("^", "ei1"),), "b": (("b", "i4"),), "c": (("x", "i1"),), "d": (("d", "i4"),), "e": (("^", "i4"),),
    "f": (("^", "ai2"), ("f", "u5")), "g": (("j", "i4"),), "h": (("^", "ai1"), ("ch", "iii5")),
    "i": (("^", "ai4"),), "j": (("j", "ie4"),), "k": (("k", "ei4"),), "l": (("^", "ai2"), ("l", "ou5")),
    "m": (("^", "ai2"), ("m", "u5")), "n": (("^", "en1"),), "o": (("^", "ou1"),), "p": (("p", "i1"),),
    "q": (("q", "iou1"),), "r": (("^", "a1"), ("^", "er5")), "s": (("^", "ai2"), ("s", "ii5")),
    "t": (("t", "i4"),), "u": (("^", "iou1"),), "v": (("^", "uei1"),),
    "w": (("d", "a1"), ("b", "u5"), ("l", "iou5")), "x": (("^", "ai2"), ("k", "e5"), ("s", "ii5")),
    "y": (("^", "uai4"),), "z": (("z", "ei4"),),
}

# English words of Chinese service text with the reading Mandarin speakers give them (lowercase, no hyphens)
LOANWORDS: dict[str, str] = {
    "ok": "ou1 kei4", "okay": "ou1 kei4", "wifi": "wai4 fai4", "app": "ai4 pu5", "apps": "ai4 pu5",
    "iphone": "ai4 feng1", "ipad": "ai4 pai4", "email": "yi1 mei2 er5", "e-mail": "yi1 mei2 er5",
    "bluetooth": "lan2 ya2", "wechat": "wei1 xin4", "android": "an1 zhuo2", "hello": "ha1 lou1",
    "hi": "hai1", "bye": "bai1", "byebye": "bai1 bai1", "sorry": "suo1 rui4", "online": "wang3 shang4",
    "vip": "wei1 ai1 pi1", "logo": "luo1 ge4", "mac": "mai4 ke4", "macbook": "mai4 ke4 bu4 ke4",
    "windows": "wen1 dou1 si5", "office": "ao4 fei4 si5", "excel": "yi1 ke4 sai4 er5", "word": "wo4 de5",
    "google": "gu3 ge1", "apple": "ping2 guo3", "taxi": "tai4 ke4 xi1", "cool": "ku4", "pizza": "pi1 sa4",
    "coffee": "ka1 fei1", "model": "mo2 te4", "radar": "lei2 da2", "laser": "lei2 she4", "jeep": "ji2 pu3",
}
# how a letter the frontend did not mark as spelled (no pronunciation known) is read: by its name

_ARPA_VOWEL = {  # ARPAbet vowel → Baker final (without tone)
    "AA": "a", "AE": "ai", "AH": "a", "AO": "ao", "AW": "ao", "AY": "ai", "EH": "ai", "ER": "er", "EY": "ei",
    "IH": "i", "IY": "i", "OW": "ou", "OY": "ao", "UH": "u", "UW": "u",
}
_ARPA_INITIAL = {
    "B": "b", "CH": "q", "D": "d", "DH": "z", "F": "f", "G": "g", "HH": "h", "JH": "j", "K": "k", "L": "l",
    "M": "m", "N": "n", "P": "p", "R": "r", "S": "s", "SH": "x", "T": "t", "TH": "s", "V": "w", "W": "^",
    "Y": "^", "Z": "z", "ZH": "r",
}
# a consonant with no vowel of its own (a cluster, a final consonant) → a short neutral syllable
_ARPA_ALONE = {
    "B": ("b", "u5"), "CH": ("q", "i5"), "D": ("d", "e5"), "DH": ("z", "ii5"), "F": ("f", "u5"), "G": ("g", "e5"),
    "HH": ("h", "e5"), "JH": ("j", "i5"), "K": ("k", "e5"), "L": ("^", "er5"), "M": ("m", "u5"), "N": ("n", "e5"),
    "NG": ("^", "eng5"), "P": ("p", "u5"), "R": ("^", "er5"), "S": ("s", "ii5"), "SH": ("x", "i5"),
    "T": ("t", "e5"), "TH": ("s", "ii5"), "V": ("f", "u5"), "W": ("^", "u5"), "Y": ("^", "i5"), "Z": ("z", "ii5"),
    "ZH": ("r", "iii5"),
}
# final + coda nasal → Baker final
_NASAL = {("a", "N"): "an", ("ai", "N"): "an", ("ei", "N"): "en", ("i", "N"): "in", ("u", "N"): "uen",
          ("ao", "N"): "an", ("ou", "N"): "ong", ("er", "N"): "en",
          ("a", "NG"): "ang", ("ai", "NG"): "ang", ("ei", "NG"): "eng", ("i", "NG"): "ing", ("u", "NG"): "ong",
          ("ao", "NG"): "ang", ("ou", "NG"): "ong", ("er", "NG"): "eng"}


def _glide(initial: str, final: str, phone: str) -> tuple[str, str]:
    """W / Y before a vowel: the Baker u- / i- finals where they exist."""
    if phone == "W":
        fin = {"a": "ua", "ai": "uai", "an": "uan", "ang": "uang", "ei": "uei", "en": "uen", "eng": "ueng",
               "o": "uo", "ao": "uo", "i": "uei", "u": "u", "er": "uo", "ou": "uo"}.get(final, "u" + final)
        return "^", fin if fin in FINALS else "u"
    if phone == "Y":
        fin = {"a": "ia", "ai": "ie", "an": "ian", "ang": "iang", "ao": "iao", "ou": "iou", "u": "iou",
               "ei": "ie", "en": "in", "eng": "ing", "i": "i", "er": "ie", "ong": "iong"}.get(final, "i")
        return "^", fin
    return initial, final


def from_arpabet(arpabet: str) -> list[tuple[str, str]]:
    """One English word's ARPAbet (``"S M IH1 TH"``) → Baker (initial, final+tone) pairs, syllable by syllable."""
    phones = [p for p in arpabet.split() if p]
    out: list[tuple[str, str]] = []
    onset: list[str] = []
    k = 0
    while k < len(phones):
        ph = phones[k]
        core, stress = ph.rstrip("012"), ph[len(ph.rstrip("012")):]
        if core in _ARPA_VOWEL:
            tone = "1" if stress in ("1", "2") else "5"
            final = _ARPA_VOWEL[core]
            for c in onset[:-1]:                       # a cluster: every consonant but the last alone
                out.append(_ARPA_ALONE[c])
            head = onset[-1] if onset else ""
            onset = []
            initial = _ARPA_INITIAL.get(head, "^") if head else "^"
            if head in ("W", "Y"):
                initial, final = _glide(initial, final, head)
            nxt = phones[k + 1] if k + 1 < len(phones) else ""
            after = phones[k + 2] if k + 2 < len(phones) else ""
            # a nasal coda joins the final unless a vowel follows it (then it is the next syllable's initial)
            if nxt in ("N", "NG") and not (after and after.rstrip("012") in _ARPA_VOWEL):
                final = _NASAL.get((final, nxt), final)
                k += 1
            if initial in ("z", "c", "s") and final == "i":
                final = "ii"
            elif initial in ("zh", "ch", "sh", "r") and final == "i":
                final = "iii"
            out.append((initial, final + tone))
        elif core in _ARPA_ALONE:
            onset.append(core)
        k += 1
    for c in onset:                                    # consonants after the last vowel
        out.append(_ARPA_ALONE[c])
    return out


def english_pairs(word: WordInput) -> list[tuple[tuple[int, int], list[tuple[str, str]]]]:
    """An English word → [(its letters' span within the word, pairs)], by the rule in the module docstring."""
    key = re.sub(r"[^a-z]", "", word.text.lower())
    if key in LOANWORDS:
        return [((0, len(word.text)), [split_syllable(s) for s in LOANWORDS[key].split()])]
    pieces = []
    pos = 0
    for part in word.english:
        at = word.text.find(part.text, pos) if part.text else -1
        span = (at, at + len(part.text)) if at >= 0 else (pos, pos)
        pos = span[1] if at >= 0 else pos
        if part.spelled or not part.arpabet.strip():
            pairs = [p for ch in part.text.lower() for p in LETTERS.get(ch, ())]
        else:
            pairs = from_arpabet(part.arpabet)
        if pairs:
            pieces.append((span, pairs))
    if not pieces:                                     # no pronunciation given: spell what is there
        pieces = [((i, i + 1), list(LETTERS[c.lower()])) for i, c in enumerate(word.text) if c.lower() in LETTERS]
    return pieces


# ---- a segment → symbols -------------------------------------------------------------------------------------------
@dataclass
class Symbols:
    """A segment's symbols, and for each the stretch of the normalized text it voices (None: the leading silence)
    and whether it is silent (a pause, a mark)."""

    names: list[str] = field(default_factory=list)
    spans: list[tuple[int, int] | None] = field(default_factory=list)
    silent: list[bool] = field(default_factory=list)

    def add(self, name: str, span: tuple[int, int] | None, silent: bool = False) -> None:
        self.names.append(name)
        self.spans.append(span)
        self.silent.append(silent)

    def __len__(self) -> int:
        return len(self.names)

    def timings(self, durations, hop: int) -> list[Timing]:
        """Per-symbol frame counts → the timing of each stretch of text, in samples from the segment's start.
        Consecutive symbols of one stretch merge; a ``#0``/``#1`` belongs to the stretch before it; the leading
        ``sil`` is time before the first character (no stretch)."""
        out: list[Timing] = []
        t = 0
        for name, span, silent, d in zip(self.names, self.spans, self.silent, durations):
            n = int(d) * hop
            if span is None or name == END:
                t += n
                continue
            if name in (BOUNDARY_IN_WORD, BOUNDARY_WORD) and out:
                out[-1].end_sample += n
            elif out and (out[-1].start, out[-1].end) == span and out[-1].silent == silent:
                out[-1].end_sample += n
            else:
                out.append(Timing(span[0], span[1], t, t + n, silent))
            t += n
        return out


def _letters_span(word: WordInput, inner: tuple[int, int]) -> tuple[int, int]:
    a = word.span[0] if word.span else 0
    return a + inner[0], a + inner[1]


def to_symbols(words: list[WordInput]) -> Symbols:
    """A segment's words → Baker symbols (``eos`` last), each with the normalized-text stretch it voices."""
    sym = Symbols()
    sym.add(SILENCE, None, True)
    pending: str | None = None          # the boundary owed before the next syllable
    last_mark: tuple[int, int] | None = None

    def syllable(pair: tuple[str, str], span: tuple[int, int], boundary: str) -> None:
        nonlocal pending, last_mark
        if len(sym) > 1:
            if pending == PAUSE:
                sym.add(PAUSE, last_mark, True)
            elif sym.names[-1] not in (PAUSE, SILENCE):
                sym.add(boundary if pending is None else pending, sym.spans[-1])      # belongs to the syllable before
        pending, last_mark = None, None
        sym.add(pair[0], span)
        sym.add(pair[1], span)

    for w in words:
        wspan = w.span or (0, len(w.text))
        if w.lang == "zh":
            chars = len(w.text)
            one_each = len(w.pinyin) == chars
            first = True
            for i, p in enumerate(w.pinyin):
                span = (wspan[0] + i, wspan[0] + i + 1) if one_each else wspan
                if p == pinyin.ERHUA and len(sym) > 1 and sym.names[-1] not in (PAUSE, SILENCE, BOUNDARY_WORD,
                                                                             BOUNDARY_IN_WORD):
                    sym.add("er5", span)                  # erhua: r-colouring of the syllable before
                    continue
                try:
                    pair = split_syllable(p)
                except ValueError:
                    continue
                syllable(pair, span, BOUNDARY_WORD if first else BOUNDARY_IN_WORD)
                first = False
        elif w.lang == "en":
            first = True
            for inner, pairs in english_pairs(w):
                span = _letters_span(w, inner)
                for pair in pairs:
                    syllable(pair, span, BOUNDARY_WORD if first else BOUNDARY_IN_WORD)
                    first = False
        elif w.lang == "punct" and any(c in PAUSE_MARKS for c in w.text):
            if len(sym) > 1:
                pending = PAUSE
                last_mark = wspan if last_mark is None else (last_mark[0], wspan[1])
    # the end: a pending pause (the segment's last mark) becomes the closing silence
    sym.add(SILENCE, last_mark if pending == PAUSE else None, True)
    sym.add(END, None, True)
    return sym


def to_ids(symbols: Symbols, symbol_to_id: dict[str, int]) -> list[int]:
    """Symbol names → the model's ids (KeyError names a symbol outside the mapper: a bug in this module)."""
    return [symbol_to_id[s] for s in symbols.names]
