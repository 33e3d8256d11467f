"""Synthesized results kept on disk for download: ``<results_dir>/<owner>/<32 hex>.wav``, the newest
``max_results`` only (all owners together).

Ids are random (128 bits), and a result is served only to its owner (a hash of the caller's token, see
``server.owner_of``): another tenant with the id still gets 404.
"""
from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from shared.audio import wav_header

_ID = re.compile(r"^[0-9a-f]{32}$")
_OWNER = re.compile(r"^[0-9a-f]{32}$")


class ResultWriter:
    """Writes PCM16 chunks to a temporary file as they arrive; ``finish()`` completes the WAV header."""

    def __init__(self, folder: Path, on_finish):
        self.folder = folder
        self.id = secrets.token_hex(16)
        self.tmp = folder / f".{self.id}.part"
        self.size = 0
        self.rate = 0
        self._f = None
        self._on_finish = on_finish

    def write(self, pcm: bytes, sample_rate: int) -> None:
        if self._f is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._f = open(self.tmp, "wb")
            self.rate = sample_rate
            self._f.write(wav_header(sample_rate, 0))
        self._f.write(pcm)
        self.size += len(pcm)

    def finish(self) -> str:
        if self._f is None:
            self.write(b"", 24000)
        self._f.seek(0)
        self._f.write(wav_header(self.rate, self.size // 2))
        self._f.close()
        self._f = None
        os.replace(self.tmp, self.folder / f"{self.id}.wav")
        self._on_finish()
        return self.id

    def discard(self) -> None:
        """Drop an unfinished result (error or stop); no-op after ``finish()``."""
        if self._f is not None:
            self._f.close()
            self._f = None
        self.tmp.unlink(missing_ok=True)


class ResultStore:
    def __init__(self, folder: str, max_results: int = 200):
        self.folder = Path(folder)
        self.max_results = max_results

    def writer(self, owner: str) -> ResultWriter:
        if not _OWNER.match(owner):
            raise ValueError("owner must be 32 hex digits")
        return ResultWriter(self.folder / owner, self.prune)

    def path(self, rid: str, owner: str) -> Path | None:
        if not _ID.match(rid) or not _OWNER.match(owner):
            return None
        p = self.folder / owner / f"{rid}.wav"
        return p if p.is_file() else None

    def prune(self) -> None:
        try:
            files = sorted(self.folder.glob("*/*.wav"), key=lambda p: p.stat().st_mtime)
        except OSError:
            return
        for p in files[:max(0, len(files) - self.max_results)]:
            p.unlink(missing_ok=True)
