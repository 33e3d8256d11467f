"""Inline readings in phoneme mode: ``字[xie3]`` (reading of the preceding character) and ``{血液|xue4 ye4}``.

Bounded: a bracket holds one syllable (at most ``MAX_READING_CHARS``), a brace a word of at most ``MAX_WORD_CHARS``
characters and its syllables (at most ``MAX_BRACE_CHARS`` in all), a character takes one reading; an error quotes
at most ``QUOTE_CHARS`` of what it found (an error never echoes kilobytes of the request back).
"""
from __future__ import annotations

from shared.errors import InvalidArgument
from shared.pinyin import is_valid_syllable, normalize_syllable

from .textutil import is_cjk

MAX_READING_CHARS = 12          # "zhuang1" is 7; room for spaces and "u:" spellings
MAX_WORD_CHARS = 16             # characters of a {word|pinyin}
MAX_BRACE_CHARS = MAX_WORD_CHARS * (1 + MAX_READING_CHARS) + 1
QUOTE_CHARS = 24


def _quote(s: str) -> str:
    return repr(s) if len(s) <= QUOTE_CHARS else repr(s[:QUOTE_CHARS]) + f"… ({len(s)} characters)"


def _close(text: str, i: int, closer: str, limit: int, base: int, what: str) -> int:
    """Index of ``closer`` for the opener at ``i``, looked for only within ``limit`` characters."""
    j = text.find(closer, i + 1, i + 2 + limit)
    if j >= 0:
        return j
    if text.find(closer, i + 2 + limit) >= 0:
        raise InvalidArgument("text", f"{what} at position {base + i} is longer than {limit} characters")
    raise InvalidArgument("text", f"unbalanced {text[i]!r} at position {base + i}")


def parse(text: str, base: int = 0) -> tuple[str, dict[int, str], list[tuple[int, int]]]:
    """→ (plain text, {position in plain text: pinyin}, the span in ``text`` (+ ``base``) each plain character came
    from). A reading belongs to its character: 要[xie3] is one span, {血液|xue4 ye4} gives 血 "{血" and 液
    "液|xue4 ye4}". Positions in errors are absolute (``base`` + index)."""
    out: list[str] = []
    forced: dict[int, str] = {}
    spans: list[tuple[int, int]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "[":
            j = _close(text, i, "]", MAX_READING_CHARS, base, "the reading")
            syl = normalize_syllable(text[i + 1:j])
            if "[" in text[i + 1:j]:
                raise InvalidArgument("text", f"nested '[' at position {base + i}")
            if not is_valid_syllable(syl):
                raise InvalidArgument("text", f"invalid pinyin {_quote(text[i + 1:j])} at position {base + i + 1}")
            if not out or not is_cjk(out[-1]):
                raise InvalidArgument("text", f"reading at position {base + i} does not follow a Chinese character")
            if len(out) - 1 in forced:
                raise InvalidArgument("text", f"a second reading at position {base + i} for the same character")
            forced[len(out) - 1] = syl
            spans[-1] = (spans[-1][0], base + j + 1)
            i = j + 1
        elif c == "{":
            j = _close(text, i, "}", MAX_BRACE_CHARS, base, "the {word|pinyin} reading")
            body = text[i + 1:j]
            if "{" in body or "|" not in body:
                raise InvalidArgument("text", f"expected {{word|pinyin}} at position {base + i}")
            word, _, readings = body.partition("|")
            if len(word) > MAX_WORD_CHARS:
                raise InvalidArgument("text", f"the word at position {base + i + 1} is longer than {MAX_WORD_CHARS} "
                                              "characters; give a reading per word")
            syls = [normalize_syllable(s) for s in readings.replace(",", " ").split()]
            for s in syls:
                if not is_valid_syllable(s):
                    raise InvalidArgument("text", f"invalid pinyin {_quote(s)} at position {base + i + 1 + len(word) + 1}")
            cjk = [k for k, ch in enumerate(word) if is_cjk(ch)]
            if not word or len(cjk) != len(word) or len(syls) != len(word):
                raise InvalidArgument("text", f"{len(syls)} pinyin syllables for {_quote(word)} at position {base + i}; "
                                              "the count must match its Chinese characters")
            for k, s in enumerate(syls):
                forced[len(out) + k] = s
            out.extend(word)
            spans.extend((base + i + 1 + k, base + i + 2 + k) for k in range(len(word)))
            spans[-len(word)] = (base + i, spans[-len(word)][1])      # the opening brace with the first character
            spans[-1] = (spans[-1][0], base + j + 1)                    # the readings and the closing one with the last
            i = j + 1
        elif c in "]}":
            raise InvalidArgument("text", f"unbalanced {c!r} at position {base + i}")
        else:
            out.append(c)
            spans.append((base + i, base + i + 1))
            i += 1
    return "".join(out), forced, spans
