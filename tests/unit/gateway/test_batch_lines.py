"""Batch JSONL parsing and the allowed-folder check (no services)."""
from __future__ import annotations

import json

import pytest

from services.gateway.batch.lines import LineError, parse_line, resolve_inside, split_jsonl, tenant_dir, uttid_of
from shared.errors import InvalidArgument


def test_split_skips_blank_lines_and_keeps_file_line_numbers():
    data = b'{"uttid": "a"}\r\n\n   \n{bad\n{"uttid": "b"}'
    assert split_jsonl(data, "jsonl", 10) == [(1, b'{"uttid": "a"}'), (4, b"{bad"), (5, b'{"uttid": "b"}')]


@pytest.mark.parametrize("data, message", [
    (b"", "jsonl: the job is empty"),
    (b"\n \n", "jsonl: the job is empty"),
    (b'{"uttid": "a"}\n{"uttid": "b"}\n{"uttid": "a"}', "jsonl: line 3: duplicate uttid 'a' (first on line 1)"),
    (b"{}\n" * 4, "jsonl: more than 3 lines (line 4)"),
])
def test_split_rejects_the_whole_job(data, message):
    with pytest.raises(InvalidArgument) as err:
        split_jsonl(data, "jsonl", 3)
    assert str(err.value).startswith(message)


def test_parse_a_full_line():
    spec = parse_line(json.dumps({"uttid": "u.1-x", "syn_text": "你好", "prompt_speech": "ref/a.wav",
                                  "prompt_text": "参考", "sample_rate": 16000, "seed": 3}).encode())
    assert (spec.uttid, spec.syn_text, spec.prompt_speech, spec.prompt_text, spec.sample_rate, spec.seed) == \
        ("u.1-x", "你好", "ref/a.wav", "参考", 16000, 3)


@pytest.mark.parametrize("raw, message", [
    (b'{"uttid": "a", ', "line: not valid JSON"),
    (b"\xff\xfe", "line: not valid UTF-8"),
    (b"[1, 2]", "line: expected a JSON object"),
    (b'{"syn_text": "hi"}', "uttid: missing"),
    (b'{"uttid": "../x", "syn_text": "hi"}', "uttid: '../x' may only contain"),
    (b'{"uttid": "a"}', "syn_text: missing"),
    (b'{"uttid": "a", "syn_text": "  "}', "syn_text: missing"),
    (b'{"uttid": "a", "syn_text": "hi", "prompt_speech": 3}', "prompt_speech: must be a string"),
    (b'{"uttid": "a", "syn_text": "hi", "sample_rate": 12345}', "sample_rate: 12345 is not supported"),
    (b'{"uttid": "a", "syn_text": "hi", "seed": -1}', "seed: -1 must be an integer"),
    # issue 23: every field checked before any work, hostile values named, never an exception of the parser
    (b'{"uttid": "a", "syn_text": "hi", "seed": ' + b"9" * 5000 + b"}", "seed: a 5000-digit number must be"),
    (b'{"uttid": "a", "syn_text": "hi", "seed": -' + b"9" * 40 + b"}", "seed: a 40-digit negative number"),
    (b'{"uttid": "a", "syn_text": "hi", "sample_rate": ' + b"1" * 4400 + b"}", "sample_rate: a 4400-digit number"),
    (b'{"uttid": "a", "syn_text": "hi", "seed": 1e400}', "seed: inf must be an integer"),
    (b'{"uttid": "a", "syn_text": "hi", "sample_rate": NaN}', "sample_rate: nan is not supported"),
    (b'{"uttid": "a", "syn_text": "hi", "seed": 7.0}', "seed: 7.0 must be an integer"),
    (b"[" * 100_000, "line: JSON nested deeper than 16 levels"),
    (b'{"uttid": "a", "syn_text": "hi", "x": ' + b"[" * 17 + b"]" * 17 + b"}", "line: JSON nested deeper than 16"),
    (b'{"uttid": "a", "syn_text": "<speak>hi</speak>"}', "syn_text: SSML is not supported"),
    (rb'{"uttid": "a", "syn_text": "hi\u0007"}', "syn_text: control character U+0007"),
    (rb'{"uttid": "a", "syn_text": "\u3002\u3002"}', "syn_text: has nothing to speak"),
    (rb'{"uttid": "a", "syn_text": "hi", "prompt_text": "x\u0000"}', "prompt_text: control character U+0000"),
    (b'{"uttid": "a", "syn_text": "hi", "prompt_speech": "' + b"a" * 1025 + b'"}', "prompt_speech: 1025 characters"),
])
def test_bad_lines_name_the_field(raw, message):
    with pytest.raises(LineError) as err:
        parse_line(raw)
    assert str(err.value).startswith(message)


def test_nesting_is_bounded_outside_strings_only():
    # brackets inside strings are text; 16 levels are allowed, and so are many shallow ones
    assert parse_line(b'{"uttid": "a", "syn_text": "hi [[[[[[[[[[[[[[[[[[[[ \\" {{{{{{{{{{{{{{{{{{{{"}').syn_text \
        == 'hi [[[[[[[[[[[[[[[[[[[[ " {{{{{{{{{{{{{{{{{{{{'
    assert parse_line(b'{"uttid": "a", "syn_text": "hi", "x": ' + b"[" * 15 + b"]" * 15 + b"}").uttid == "a"
    assert parse_line(b'{"uttid": "a", "syn_text": "hi", "x": [' + b"[1]," * 5000 + b"[2]]}").uttid == "a"
    # where a job is read up front, a deep line has no uttid and the job is not refused for it
    assert uttid_of(b"[" * 100_000) == "" and uttid_of(b'{"uttid": "u", "seed": ' + b"9" * 5000 + b"}") == "u"
    assert [n for n, _ in split_jsonl(b'{"uttid": "a"}\n' + b"[" * 100_000 + b'\n{"uttid": "b"}', "jsonl", 5)] \
        == [1, 2, 3]


def test_paths_must_stay_inside_the_tenants_own_folder(tmp_path):
    root = tmp_path / "in"
    (root / "alice" / "sub").mkdir(parents=True)
    (root / "bob").mkdir()
    (root / "alice" / "sub" / "a.wav").write_bytes(b"x")
    (root / "bob" / "b.wav").write_bytes(b"y")
    (tmp_path / "secret").write_bytes(b"s")
    (root / "alice" / "link").symlink_to(tmp_path / "secret")
    mine = root / "alice" / "sub" / "a.wav"
    assert resolve_inside(str(root), "alice", "sub/a.wav", "f") == mine.resolve()
    assert resolve_inside(str(root), "alice", str(mine), "f").name == "a.wav"
    answers = set()
    # outside, another tenant's (existing!) file, a link out, a folder, a missing file: one and the same answer
    for name in ("../secret", "../../etc/passwd", "/etc/passwd", "link", "sub/../../secret", ".", "sub",
                 "../bob/b.wav", str(root / "bob" / "b.wav"), "nope.wav", "../bob/nope.wav"):
        with pytest.raises(InvalidArgument) as err:
            resolve_inside(str(root), "alice", name, "prompt_speech")
        answers.add(str(err.value).replace(repr(name), "<name>"))
    assert answers == {"prompt_speech: no readable file <name> in this tenant's input folder"}
    assert resolve_inside(str(root), "bob", "b.wav", "f").name == "b.wav"
    with pytest.raises(InvalidArgument, match="server paths are disabled"):
        resolve_inside("", "alice", "sub/a.wav", "f")


def test_tenant_folder_names_are_safe():
    assert tenant_dir("acme-1") == "acme-1"
    assert tenant_dir("../x").startswith("t_") and "/" not in tenant_dir("a/b")
