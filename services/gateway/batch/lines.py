"""A batch job's input: its JSONL lines (split, parsed, checked) and the files a line or a job may name inside the
tenant's own input folder (path safety)."""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from shared.audio import SUPPORTED_OUTPUT_RATES
from shared.errors import InvalidArgument

from ..validate import MAX_SEED

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


def parse_line(raw: bytes) -> LineSpec:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LineError(f"line: not valid UTF-8 (byte {exc.start})") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LineError(f"line: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise LineError("line: expected a JSON object")
    uttid = obj.get("uttid")
    if not isinstance(uttid, str) or not uttid:
        raise LineError("uttid: missing (a non-empty string is required)")
    if not UTTID_RE.fullmatch(uttid):
        raise LineError(f"uttid: {uttid[:140]!r} may only contain A-Z a-z 0-9 . _ - (1..128 characters, "
                        "starting with a letter or digit)")
    syn_text = obj.get("syn_text")
    if not isinstance(syn_text, str) or not syn_text.strip():
        raise LineError("syn_text: missing (a non-empty string is required)")
    spec = LineSpec(uttid=uttid, syn_text=syn_text)
    for key in ("prompt_speech", "prompt_text"):
        value = obj.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise LineError(f"{key}: must be a string")
        setattr(spec, key, value)
    if len(spec.prompt_text) > 1000:
        raise LineError("prompt_text: longer than 1000 characters")
    rate = obj.get("sample_rate")
    if rate is not None:
        if isinstance(rate, bool) or not isinstance(rate, int) or rate not in SUPPORTED_OUTPUT_RATES:
            raise LineError(f"sample_rate: {rate!r} is not supported; use one of "
                            f"{', '.join(map(str, SUPPORTED_OUTPUT_RATES))}")
        spec.sample_rate = rate
    seed = obj.get("seed")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise LineError(f"seed: {seed!r} must be an integer in 0..2^63-1")
        spec.seed = seed
    return spec


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
    try:
        uttid = json.loads(raw).get("uttid")
    except (ValueError, AttributeError):
        return ""
    return uttid if isinstance(uttid, str) else ""
