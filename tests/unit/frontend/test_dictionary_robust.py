"""The replace dictionary against hostile files: every bad line is reported with its line number, good lines load,
a 100k-line file loads in seconds, and a broken file picked up by hot reload never breaks a request."""
from __future__ import annotations

import json
import os
import time

from services.frontend.engine import FrontendEngine
from services.frontend.engine.dictionary import load_dictionary

from .conftest import zh_pinyin

GOOD = {"char": "血", "pinyin": "xie3", "context": "流血"}


def line(obj) -> bytes:
    return (obj if isinstance(obj, bytes) else json.dumps(obj, ensure_ascii=False).encode()) + b"\n"


def test_hostile_lines_are_errors_with_line_numbers(tmp_path):
    bad = [
        b"[" * 100_000,                                            # nested deeper than the JSON parser's recursion limit
        b"\xff\xfe\x00garbage\x80",                                 # not UTF-8
        b'{"word": "\\ud800", "pinyin": "a1"}',                    # a lone surrogate
        {"char": 5, "pinyin": "xie3"}, {"word": ["重复"], "pinyin": "chong2 fu4"}, {"word": "重复", "pinyin": None},
        {"char": "血", "pinyin": "xie3", "context": 5}, {"char": "血", "pinyin": ["xie3"]}, [], "a string", 123,
        b"NaN", {"char": "", "pinyin": "a1"}, {"word": "ab", "pinyin": "a1 b1"}, {"char": "血", "pinyin": "xie3 xue4"},
        b'{"char": "\xe8\xa1\x80", "pinyin": "xie3"', b"\x00" * 100,
    ]
    p = tmp_path / "d.jsonl"
    p.write_bytes(line(GOOD) + b"".join(line(b) for b in bad) + line({"word": "重复", "pinyin": "chong2 fu4"}))
    d = load_dictionary(str(p))
    assert [n for n, _ in d.errors] == list(range(2, 2 + len(bad)))
    assert "nested too deeply" in dict(d.errors)[2]
    assert d.entries == 2


def test_100k_lines_with_bad_ones_load_fast_and_name_each_bad_line(tmp_path):
    chars = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动"
    rows, bad_lines = [], []
    for i in range(100_000):
        if i % 1000 == 999:
            rows.append('{"char": "血", "pinyin": "xie9"}' if i % 2 else "{broken")
            bad_lines.append(i + 1)
        else:
            c = chars[i % len(chars)]
            rows.append(json.dumps({"char": c, "pinyin": "de5", "context": c + chr(0x4E00 + (i // len(chars)) % 20000)},
                                   ensure_ascii=False))
    p = tmp_path / "big.jsonl"
    p.write_text("\n".join(rows), encoding="utf-8")
    t0 = time.perf_counter()
    d = load_dictionary(str(p))
    assert time.perf_counter() - t0 < 20          # ~1 s on a quiet 2-core machine
    assert [n for n, _ in d.errors] == bad_lines and len(bad_lines) == 100
    assert d.entries == 99_900 and not d.warnings


def test_a_broken_file_picked_up_by_hot_reload_never_breaks_a_request(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(line(GOOD))
    eng = FrontendEngine(str(p), dict_check_interval_s=0)
    assert zh_pinyin(eng.analyze("流血"))["流血"] == ["liu2", "xie3"]
    p.write_bytes(b"[" * 100_000 + b"\n" + line({"char": "血", "pinyin": "xue4", "context": "流血"}))
    os.utime(p, (2_000_000, 2_000_000))
    assert zh_pinyin(eng.analyze("流血"))["流血"] == ["liu2", "xue4"]     # reloaded in the request path, no crash
    assert [n for n, _ in eng.dictionary.errors] == [1]
    p.write_bytes(os.urandom(4096))                                      # binary garbage: all errors, still serving
    os.utime(p, (2_000_100, 2_000_100))
    assert eng.analyze("流血")
    p.unlink()                                                           # gone: an error, not a crash
    assert eng.analyze("流血") and eng.dictionary.errors[0][0] == 0


def test_a_dictionary_file_that_disappears_keeps_the_last_good_readings(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(line(GOOD))
    eng = FrontendEngine(str(p), dict_check_interval_s=0)
    assert zh_pinyin(eng.analyze("流血"))["流血"] == ["liu2", "xie3"]
    p.unlink()
    entries, errors = eng.reload_dictionary()
    assert errors[0][0] == 0 and "not found" in errors[0][1] and entries == eng.dictionary.entries > 0
    assert zh_pinyin(eng.analyze("流血"))["流血"] == ["liu2", "xie3"]      # still the override, not pypinyin's xue4
