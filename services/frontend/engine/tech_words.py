"""The tech lexicon: English words of Chinese service text, read as people here say them.

CMUdict and the spelling rules read most of them right; these are the ones they do not (Wi-Fi "wih-fai" from
letter-to-sound, APP spelled A-P-P, iOS "ee-os"), and the ones whose reading should not depend on how they are
written (Wi-Fi, WiFi, wifi, WIFI are all "wai-fai"). A word is looked up by its letters, lower-cased, hyphens
dropped; the tokenizer keeps a hyphenated word that is here as one word (g2p.py), so Wi-Fi is one word, not
"Wi", "-", "Fi".

Each entry is the word's pieces: (number of letters, ARPAbet with stress digits, spelled?) — a spelled piece is
one letter said by its name (its ARPAbet left "" here: the name's, english.LETTER_NAMES). ``ZH_ONLY`` entries hold
in a Chinese sentence only (an English sentence says "app" /æp/ as CMUdict does).

| written | said | pieces |
|---|---|---|
| Wi-Fi, WiFi, wifi, WIFI | wai-fai | Wi + Fi |
| App, APP, app (Chinese sentence) | ep (诶普) | App |
| iPhone, iPad, iPod, iCloud, iMac | I + word | i (spelled) + Phone … |
| iOS, macOS, IOS | I-O-S, mac-O-S | spelled letters |
| USB, USB-C, Type-C | U-S-B(-C), type-C | spelled letters |
| PDF, ID, OK, VIP, QQ, GPS, NFC, WLAN, PPT, JPG, PNG, HTTP(S), URL | letter by letter | spelled letters |
| Android, Bluetooth, e-mail/email, WeChat, AirPods, AirDrop | as English speakers say them | CMUdict / parts |

5G, 4G: text normalization reads the digit (五G), and the letter G is spelled by the rules (JH IY1).
"""
from __future__ import annotations



def _spelled(word: str) -> tuple:
    """Letters said by their names (the ARPAbet of each name: english.LETTER_NAMES)."""
    return tuple((1, "", True) for _ in word)


TECH_WORDS: dict[str, tuple[tuple[int, str, bool], ...]] = {
    "wifi": ((2, "W AY1", False), (2, "F AY2", False)),
    "iphone": ((1, "AY1", True), (5, "F OW2 N", False)),
    "ipad": ((1, "AY1", True), (3, "P AE2 D", False)),
    "ipod": ((1, "AY1", True), (3, "P AA2 D", False)),
    "icloud": ((1, "AY1", True), (5, "K L AW1 D", False)),
    "imac": ((1, "AY1", True), (3, "M AE2 K", False)),
    "ios": _spelled("ios"),
    "macos": ((3, "M AE1 K", False), *_spelled("os")),
    "usb": _spelled("usb"),
    "usbc": _spelled("usbc"),
    "typec": ((4, "T AY1 P", False), *_spelled("c")),
    "pdf": _spelled("pdf"),
    "id": _spelled("id"),
    "ok": _spelled("ok"),
    "vip": _spelled("vip"),
    "qq": _spelled("qq"),
    "gps": _spelled("gps"),
    "nfc": _spelled("nfc"),
    "wlan": _spelled("wlan"),
    "ppt": _spelled("ppt"),
    "jpg": _spelled("jpg"),
    "png": _spelled("png"),
    "http": _spelled("http"),
    "https": _spelled("https"),
    "url": _spelled("url"),
    "android": ((7, "AE1 N D R OY2 D", False),),
    "bluetooth": ((4, "B L UW1", False), (5, "T UW2 TH", False)),
    "email": ((1, "IY0", False), (4, "M EY1 L", False)),
    "wechat": ((2, "W IY1", False), (4, "CH AE1 T", False)),
    "airpods": ((3, "EH1 R", False), (4, "P AA2 D Z", False)),
    "airdrop": ((3, "EH1 R", False), (4, "D R AA0 P", False)),
}
ZH_ONLY: dict[str, tuple[tuple[int, str, bool], ...]] = {
    "app": ((3, "EH1 P", False),),
}


def key(word: str) -> str:
    return word.replace("-", "").lower()


def is_tech_word(word: str) -> bool:
    """The lexicon knows this word (in some context): a hyphenated one stays one word."""
    k = key(word)
    return k in TECH_WORDS or k in ZH_ONLY


def lexicon_entry(word: str, zh: bool) -> list[tuple[str, str, bool]] | None:
    """(letters, ARPAbet, spelled) per piece of ``word`` as the lexicon reads it ("" ARPAbet: a letter's name), or
    None when it has no entry."""
    k = key(word)
    entry = ZH_ONLY.get(k) if zh else None
    entry = entry or TECH_WORDS.get(k)
    if entry is None:
        return None
    letters = word.replace("-", "")
    if sum(n for n, _, _ in entry) != len(letters):       # the table's letter counts are checked by a test
        return None
    out, k = [], 0
    for n, arpabet, spelled in entry:
        out.append((letters[k:k + n], arpabet, spelled))
        k += n
    return out
