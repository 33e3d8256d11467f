"""Batch JSONL parsing and the allowed-folder check (no services)."""
from __future__ import annotations

import json

import pytest

from services.gateway.batch import LineError, parse_line, resolve_inside, split_jsonl, tenant_dir
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
])
def test_bad_lines_name_the_field(raw, message):
    with pytest.raises(LineError) as err:
        parse_line(raw)
    assert str(err.value).startswith(message)


def test_paths_must_stay_inside_the_allowed_folder(tmp_path):
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.wav").write_bytes(b"x")
    (tmp_path / "secret").write_bytes(b"s")
    (root / "link").symlink_to(tmp_path / "secret")
    assert resolve_inside(str(root), "sub/a.wav", "f") == (root / "sub" / "a.wav").resolve()
    assert resolve_inside(str(root), str(root / "sub" / "a.wav"), "f").name == "a.wav"
    for name in ("../secret", "../../etc/passwd", "/etc/passwd", "link", "sub/../../secret", "."):
        with pytest.raises(InvalidArgument) as err:
            resolve_inside(str(root), name, "prompt_speech")
        assert "outside the allowed folder" in str(err.value), name
    with pytest.raises(InvalidArgument, match="no such file 'nope.wav'"):
        resolve_inside(str(root), "nope.wav", "f")
    with pytest.raises(InvalidArgument, match="server paths are disabled"):
        resolve_inside("", "sub/a.wav", "f")


def test_tenant_folder_names_are_safe():
    assert tenant_dir("acme-1") == "acme-1"
    assert tenant_dir("../x").startswith("t_") and "/" not in tenant_dir("a/b")
