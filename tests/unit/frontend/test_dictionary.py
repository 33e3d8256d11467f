import json
import os

import pytest

from services.frontend.engine import FrontendEngine

from .conftest import zh_pinyin


def write(path, lines, mtime=None):
    path.write_text("\n".join(l if isinstance(l, str) else json.dumps(l, ensure_ascii=False) for l in lines) + "\n",
                    encoding="utf-8")
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def test_context_condition_and_word(tmp_path):
    p = tmp_path / "d.jsonl"
    write(p, [{"char": "行", "pinyin": "xing2", "context": "银行"},
              {"char": "长", "pinyin": "chang2", "condition": "长大"},
              {"word": "行走", "pinyin": "hang2 zou3"}])
    eng = FrontendEngine(str(p), dict_check_interval_s=0)
    assert eng.dictionary.entries == 3 and not eng.dictionary.errors
    got = zh_pinyin(eng.analyze("我去银行，孩子长大，行走"))
    assert got["银行"] == ["yin2", "xing2"]
    assert got["长大"] == ["chang2", "da4"]
    assert got["行走"] == ["hang2", "zou3"]
    # outside its context the char keeps the model's reading
    assert zh_pinyin(eng.analyze("测量长度"))["长度"] == ["chang2", "du4"]
    assert zh_pinyin(eng.analyze("重要"))["重要"] == ["zhong4", "yao4"]


def test_malformed_lines_reported_with_line_numbers(tmp_path):
    p = tmp_path / "d.jsonl"
    write(p, [{"char": "血", "pinyin": "xie3", "context": "流血"},
              "{not json",
              {"char": "血"},
              {"char": "血", "pinyin": "xie9", "context": "流血"},
              {"word": "重复", "pinyin": "chong2"},
              {"pinyin": "a1"},
              "",
              {"char": "ab", "pinyin": "a1"},
              {"char": "血", "pinyin": "xue4", "context": "液体"},
              {"word": "重复", "pinyin": "chong2 fu4"}])
    eng = FrontendEngine(str(p))
    entries, errors = eng.reload_dictionary()
    lines = [n for n, _ in errors]
    assert lines == [2, 3, 4, 5, 6, 8, 9]
    assert entries == 2
    assert "syllables" in dict(errors)[5]
    assert zh_pinyin(eng.analyze("流血重复"))["重复"] == ["chong2", "fu4"]


def test_duplicates_last_wins_with_warning(tmp_path):
    p = tmp_path / "d.jsonl"
    write(p, [{"word": "重复", "pinyin": "zhong4 fu4"}, {"word": "重复", "pinyin": "chong2 fu4"},
              {"char": "血", "pinyin": "xue4", "context": "流血"}, {"char": "血", "pinyin": "xie3", "context": "流血"}])
    eng = FrontendEngine(str(p))
    warnings = eng.dictionary.warnings
    assert any("lines 1 and 2" in m for _, m in warnings)
    assert any("lines 3 and 4" in m for _, m in warnings)
    got = zh_pinyin(eng.analyze("重复流血"))
    assert got["重复"] == ["chong2", "fu4"] and got["流血"] == ["liu2", "xie3"]


def test_conflicting_rules_reported(tmp_path):
    p = tmp_path / "d.jsonl"
    write(p, [{"word": "流血", "pinyin": "liu2 xue4"}, {"char": "血", "pinyin": "xie3", "context": "流血"}])
    eng = FrontendEngine(str(p))
    assert any("conflicting" in m for _, m in eng.dictionary.warnings)


def test_reload_on_mtime_change_without_restart(tmp_path):
    p = tmp_path / "d.jsonl"
    write(p, [{"char": "血", "pinyin": "xue4", "context": "流血"}], mtime=1_000_000)
    eng = FrontendEngine(str(p), dict_check_interval_s=0)
    assert zh_pinyin(eng.analyze("流血"))["流血"] == ["liu2", "xue4"]
    write(p, [{"char": "血", "pinyin": "xie3", "context": "流血"}], mtime=1_000_100)
    assert zh_pinyin(eng.analyze("流血"))["流血"] == ["liu2", "xie3"]
    # streams pick it up too
    write(p, [{"char": "血", "pinyin": "xue4", "context": "流血"}], mtime=1_000_200)
    s = eng.stream()
    segs = s.push("流血") + s.flush()
    assert zh_pinyin(segs)["流血"] == ["liu2", "xue4"]


def test_check_interval_limits_stat(tmp_path):
    p = tmp_path / "d.jsonl"
    write(p, [{"char": "血", "pinyin": "xue4", "context": "流血"}], mtime=1_000_000)
    eng = FrontendEngine(str(p), dict_check_interval_s=3600)
    write(p, [{"char": "血", "pinyin": "xie3", "context": "流血"}], mtime=1_000_100)
    assert zh_pinyin(eng.analyze("流血"))["流血"] == ["liu2", "xue4"]
    assert eng.reload_dictionary()[0] == 1
    assert zh_pinyin(eng.analyze("流血"))["流血"] == ["liu2", "xie3"]


def test_missing_file_is_an_error_not_a_crash(tmp_path):
    eng = FrontendEngine(str(tmp_path / "nope.jsonl"))
    entries, errors = eng.reload_dictionary()
    assert entries == 0 and errors and errors[0][0] == 0
    assert eng.analyze("你好")


def test_100k_lines_load_fast(tmp_path):
    import time

    p = tmp_path / "big.jsonl"
    chars = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动"
    lines = [json.dumps({"char": chars[i % len(chars)], "pinyin": "de5", "context": chars[i % len(chars)] + chr(0x4E00 + (i // len(chars)) % 20000)},
                        ensure_ascii=False) for i in range(100_000)]
    p.write_text("\n".join(lines), encoding="utf-8")
    t0 = time.perf_counter()
    eng = FrontendEngine(str(p))
    assert time.perf_counter() - t0 < 10
    assert eng.dictionary.entries == 100_000 and not eng.dictionary.errors
    assert eng.analyze("我们是中国人")
