"""A batch job's input: its JSONL lines (split, parsed, checked) and the files a line or a job may name inside the
tenant's own input folder (path safety)."""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.audio import SUPPORTED_OUTPUT_RATES
from shared.errors import InvalidArgument
from shared.limits import MAX_TEXT_CHARS

from ..validate import MAX_SEED, check_ssml, check_text, has_speakable

UTTID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_TENANT_DIR_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def tenant_dir(tenant: str) -> str:
    """A tenant's folder name: the tenant itself when it is a safe file name, else a hash of it."""
    if _TENANT_DIR_RE.fullmatch(tenant):
        return tenant
    return "t_" + hashlib.sha256(tenant.encode()).hexdigest()[:16]


def resolve_inside(root: str, tenant: str, name: str, field: str) -> Path:
    """``name`` (relative) as a file inside the tenant's own input folder ``<root>/<tenant_dir(tenant)>``.

    Missing, outside (``..``, absolute, a symlink pointing out), not a regular file, unreadable: all get the same
    answer, so the message never tells another tenant's (or the server's) files apart from absent ones."""
    if not root:
        raise InvalidArgument(field, "server paths are disabled on this gateway (TTS_GATEWAY_BATCH_INPUT_DIR is "
                                     "not set); upload the content instead")
    if not name or "\x00" in name:
        raise InvalidArgument(field, "empty path")
    base = (Path(root) / tenant_dir(tenant)).resolve()
    path = (base / name).resolve()          # symlinks resolved: a link pointing out is outside too
    if base not in path.parents or not os.access(path, os.R_OK) or not path.is_file():
        raise InvalidArgument(field, f"no readable file {name[:200]!r} in this tenant's input folder")
    return path


class LineError(Exception):
    """A line that cannot be synthesized; the message starts with the field."""


@dataclass
class LineSpec:
    uttid: str
    syn_text: str
    prompt_speech: str = ""
    prompt_text: str = ""
    sample_rate: int = 0
    seed: int | None = None


MAX_JSON_DEPTH = 16         # a line is one flat object; deeper nesting (say "[" x 100,000) is refused before parsing
MAX_INT_DIGITS = 30         # a longer integer is never a valid value: kept as its digit count, never converted
MAX_PROMPT_SPEECH = 1024    # characters of a voice name or a path
_JSON_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"')


class BigInt:
    """A JSON integer of more than MAX_INT_DIGITS digits (Python refuses to convert past 4,300 digits)."""

    def __init__(self, digits: str):
        self.negative = digits.startswith("-")
        self.digits = len(digits) - self.negative

    def __repr__(self) -> str:
        return f"a {self.digits}-digit {'negative ' if self.negative else ''}number"


def _int(digits: str):
    return int(digits) if len(digits) <= MAX_INT_DIGITS else BigInt(digits)


def _nested_too_deep(text: str) -> bool:
    """More than MAX_JSON_DEPTH levels of [ and { outside strings, in linear time (no parser recursion)."""
    bare = _JSON_STRING.sub("", text)
    if bare.count("[") + bare.count("{") <= MAX_JSON_DEPTH:
        return False
    b = np.frombuffer(bare.encode(), dtype=np.uint8)      # UTF-8: a bracket byte is always that ASCII bracket
    step = ((b == 0x5B) | (b == 0x7B)).astype(np.int32) - ((b == 0x5D) | (b == 0x7D))
    return int(np.cumsum(step).max()) > MAX_JSON_DEPTH


def load_line(raw: bytes):
    """A line as JSON, bounded: invalid UTF-8, invalid JSON and nesting deeper than MAX_JSON_DEPTH are LineError
    naming the line; an integer too long to be a value is a ``BigInt``. Never RecursionError or ValueError."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LineError(f"line: not valid UTF-8 (byte {exc.start})") from None
    if _nested_too_deep(text):
        raise LineError(f"line: JSON nested deeper than {MAX_JSON_DEPTH} levels; a line is one flat object")
    try:
        return json.loads(text, parse_int=_int)
    except json.JSONDecodeError as exc:
        raise LineError(f"line: not valid JSON ({exc.msg} at column {exc.colno})") from None


def _shown(value) -> str:
    return repr(value)[:40]


def _text(obj: dict, key: str, max_chars: int) -> str:
    """A string field: control characters and SSML are refused as in a Synthesize request."""
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise LineError(f"{key}: must be a string, not {_shown(value)}")
    if len(value) > max_chars:
        raise LineError(f"{key}: {len(value)} characters; the limit is {max_chars}")
    try:
        check_text(value, len(value), max_chars, field=key)
        check_ssml(value, field=key)
    except InvalidArgument as exc:
        raise LineError(exc.message) from None
    return value


def parse_line(raw: bytes, max_text_chars: int = MAX_TEXT_CHARS) -> LineSpec:
    """Every field of a line checked before any work is done for it; LineError names the field."""
    obj = load_line(raw)
    if not isinstance(obj, dict):
        raise LineError("line: expected a JSON object")
    uttid = obj.get("uttid")
    if not isinstance(uttid, str) or not uttid:
        raise LineError("uttid: missing (a non-empty string is required)")
    if not UTTID_RE.fullmatch(uttid):
        raise LineError(f"uttid: {uttid[:140]!r} may only contain A-Z a-z 0-9 . _ - (1..128 characters, "
                        "starting with a letter or digit)")
    syn_text = _text(obj, "syn_text", max_text_chars)
    if not syn_text.strip():
        raise LineError("syn_text: missing (a non-empty string is required)")
    if not has_speakable(syn_text):
        raise LineError("syn_text: has nothing to speak (only punctuation, symbols or spaces)")
    spec = LineSpec(uttid=uttid, syn_text=syn_text, prompt_speech=_text(obj, "prompt_speech", MAX_PROMPT_SPEECH),
                    prompt_text=_text(obj, "prompt_text", 1000))
    rate = obj.get("sample_rate")
    if rate is not None:
        if isinstance(rate, bool) or not isinstance(rate, int) or rate not in SUPPORTED_OUTPUT_RATES:
            raise LineError(f"sample_rate: {_shown(rate)} is not supported; use one of "
                            f"{', '.join(map(str, SUPPORTED_OUTPUT_RATES))}")
        spec.sample_rate = rate
    seed = obj.get("seed")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise LineError(f"seed: {_shown(seed)} must be an integer in 0..2^63-1")
        spec.seed = seed
    return spec


def is_path(value: str) -> bool:
    """``prompt_speech`` names a file (a folder or an extension in it) rather than a voice."""
    return "/" in value or "\\" in value or "." in value


def split_jsonl(data: bytes, field: str, max_lines: int) -> list[tuple[int, bytes]]:
    """Non-blank lines as (1-based line number, raw bytes). Empty job, too many lines and duplicate uttids are
    INVALID_ARGUMENT naming the line; other problems are left for the line itself to fail."""
    out: list[tuple[int, bytes]] = []
    first_line: dict[str, int] = {}
    for lineno, raw in enumerate(data.split(b"\n"), 1):
        raw = raw.rstrip(b"\r")
        if not raw.strip():
            continue
        out.append((lineno, raw))
        if len(out) > max_lines:
            raise InvalidArgument(field, f"more than {max_lines} lines (line {lineno}); the limit is {max_lines} "
                                         "(TTS_GATEWAY_BATCH_MAX_LINES)")
        uttid = uttid_of(raw)
        if uttid:
            if uttid in first_line:
                raise InvalidArgument(field, f"line {lineno}: duplicate uttid {uttid[:140]!r} (first on line "
                                             f"{first_line[uttid]})")
            first_line[uttid] = lineno
    if not out:
        raise InvalidArgument(field, "the job is empty (no non-blank lines)")
    return out


def uttid_of(raw: bytes) -> str:
    """The line's uttid as written ("" when the line is not an object with a string uttid)."""
    try:
        obj = load_line(raw)
    except LineError:
        return ""
    uttid = obj.get("uttid") if isinstance(obj, dict) else None
    return uttid if isinstance(uttid, str) else ""
