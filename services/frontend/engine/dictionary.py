"""The replace dictionary (JSONL): per-context character readings and whole-word readings.

Line formats (one JSON object per line, blank lines ignored):
  {"char": "血", "pinyin": "xie3", "context": "流血"}     char gets the reading where it occurs inside context
  {"char": "行", "pinyin": "hang2", "condition": "银行"}  same as context
  {"word": "重复", "pinyin": "chong2 fu4"}                 whole-word reading; jieba keeps the word together
  {"char": "嗯", "pinyin": "en4"}                          char reading everywhere (no context)
Malformed lines are reported with their 1-based line number; every other line still loads. A later duplicate of
the same key wins (warning with both line numbers); a char+context whose reading disagrees with a word entry
covering the same text is reported as a conflict (the word entry wins where both apply).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field

from shared.pinyin import is_valid_syllable, normalize_syllable

from .textutil import is_cjk

log = logging.getLogger("frontend.dictionary")


@dataclass
class CharRule:
    char: str
    pinyin: str
    context: str          # "" = everywhere
    offsets: tuple[int, ...]  # where char occurs in context
    line: int


@dataclass
class ReplaceDictionary:
    words: dict[str, tuple[list[str], int]] = field(default_factory=dict)       # word → (syllables, line)
    chars: dict[str, dict[str, CharRule]] = field(default_factory=dict)        # char → context → rule
    errors: list[tuple[int, str]] = field(default_factory=list)
    warnings: list[tuple[int, str]] = field(default_factory=list)
    entries: int = 0

    def char_overrides(self, text: str) -> dict[int, tuple[str, int]]:
        """Positions in ``text`` whose reading a char rule forces → (pinyin, specificity)."""
        out: dict[int, tuple[str, int]] = {}
        if not self.chars:
            return out
        for pos, ch in enumerate(text):
            rules = self.chars.get(ch)
            if not rules:
                continue
            for rule in rules.values():
                if not rule.context:
                    if pos not in out:
                        out[pos] = (rule.pinyin, 0)
                    continue
                for off in rule.offsets:
                    start = pos - off
                    if start >= 0 and text.startswith(rule.context, start):
                        prev = out.get(pos)
                        if prev is None or len(rule.context) >= prev[1]:
                            out[pos] = (rule.pinyin, len(rule.context))
                        break
        return out


def _check_pinyin(value, n_chars: int | None) -> list[str]:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("'pinyin' must be a non-empty string")
    syllables = [normalize_syllable(s) for s in value.replace(",", " ").split()]
    bad = [s for s in syllables if not is_valid_syllable(s)]
    if bad:
        raise ValueError(f"invalid pinyin {bad[0]!r} (a Mandarin syllable followed by a tone digit 1-5)")
    if n_chars is not None and len(syllables) != n_chars:
        raise ValueError(f"{len(syllables)} pinyin syllables for {n_chars} characters")
    return syllables


def load_dictionary(path: str | None) -> ReplaceDictionary:
    if not path:
        return ReplaceDictionary()
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        d = ReplaceDictionary()
        d.errors.append((0, f"file not found: {os.path.basename(path)}"))
        return d
    except OSError as exc:
        d = ReplaceDictionary()
        d.errors.append((0, f"cannot read {os.path.basename(path)}: {exc.strerror or type(exc).__name__}"))
        return d
    return parse_dictionary(text)


def parse_dictionary(text: str) -> ReplaceDictionary:
    """The dictionary from its JSONL text (a file's content, or the copy shared in Redis)."""
    d = ReplaceDictionary()
    lines = text.splitlines()
    word_lines: dict[str, int] = {}
    char_keys: dict[tuple[str, str], int] = {}
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            d.errors.append((lineno, f"invalid JSON: {exc.msg}"))
            continue
        except RecursionError:          # e.g. "[[[[…" nested deeper than the parser's limit
            d.errors.append((lineno, "invalid JSON: nested too deeply"))
            continue
        try:
            if not isinstance(obj, dict):
                raise ValueError("expected a JSON object")
            if "word" in obj:
                word = obj["word"]
                if not isinstance(word, str) or not word or not all(is_cjk(c) for c in word):
                    raise ValueError("'word' must be a non-empty string of Chinese characters")
                if "pinyin" not in obj:
                    raise ValueError("missing field 'pinyin'")
                syl = _check_pinyin(obj["pinyin"], len(word))
                if word in word_lines:
                    d.warnings.append((lineno, f"duplicate word {word!r} (lines {word_lines[word]} and {lineno}); line {lineno} wins"))
                else:
                    d.entries += 1
                word_lines[word] = lineno
                d.words[word] = (syl, lineno)
            elif "char" in obj:
                ch = obj["char"]
                if not isinstance(ch, str) or len(ch) != 1 or not is_cjk(ch):
                    raise ValueError("'char' must be exactly one Chinese character")
                if "pinyin" not in obj:
                    raise ValueError("missing field 'pinyin'")
                syl = _check_pinyin(obj["pinyin"], 1)[0]
                ctx = obj.get("context", obj.get("condition", "")) or ""
                if "context" in obj and "condition" in obj and obj["context"] != obj["condition"]:
                    raise ValueError("both 'context' and 'condition' given and they differ")
                if not isinstance(ctx, str):
                    raise ValueError("'context' must be a string")
                if ctx and ch not in ctx:
                    raise ValueError(f"context {ctx!r} does not contain the char {ch!r}")
                offsets = tuple(i for i, c in enumerate(ctx) if c == ch)
                key = (ch, ctx)
                rules = d.chars.setdefault(ch, {})
                if key in char_keys:
                    d.warnings.append((lineno, f"duplicate rule for {ch!r} in {ctx!r} (lines {char_keys[key]} and {lineno}); line {lineno} wins"))
                    del rules[ctx]
                else:
                    d.entries += 1
                char_keys[key] = lineno
                rules[ctx] = CharRule(ch, syl, ctx, offsets, lineno)
            else:
                raise ValueError("missing field 'char' or 'word'")
        except ValueError as exc:
            d.errors.append((lineno, str(exc)))
    # conflicts: a char-in-context rule that disagrees with a word entry for the very same text
    for ch, rules in d.chars.items():
        for r in rules.values():
            if r.context in d.words:
                syl, wline = d.words[r.context]
                for off in r.offsets:
                    if syl[off] != r.pinyin:
                        d.warnings.append((r.line, f"conflicting rules: line {r.line} reads {ch!r} in {r.context!r} as "
                                                   f"{r.pinyin}, line {wline} as {syl[off]}; the word entry wins"))
                        break
    for kind, items in (("warning", d.warnings), ("error", d.errors)):
        for lineno, msg in items[:20]:
            log.warning("replace dictionary %s: line %d: %s", kind, lineno, msg)
        if len(items) > 20:
            log.warning("replace dictionary: %d more %ss not logged", len(items) - 20, kind)
    return d


def file_stamp(path: str | None):
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)
