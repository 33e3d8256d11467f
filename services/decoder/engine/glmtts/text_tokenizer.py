"""Loading the glmtts text tokenizer: a plain transformers tokenizer, or one that ships its own code (the published
``vq32k-phoneme-tokenizer``: tiktoken BPE ranks + a tokenizer class in a ``.py`` file of the directory)."""
from __future__ import annotations

import json
from pathlib import Path

TRUST_SETTING = "TTS_DECODER_GLMTTS_TRUST_REMOTE_CODE"


class TokenizerNeedsRemoteCode(RuntimeError):
    """The tokenizer directory defines its own tokenizer class and running its code was not allowed."""


def custom_code_class(tokenizer_dir: str | Path) -> str:
    """The class named by ``auto_map`` in ``tokenizer_config.json`` (custom code), or "" when there is none."""
    cfg = Path(tokenizer_dir) / "tokenizer_config.json"
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    auto = data.get("auto_map") or {}
    entry = auto.get("AutoTokenizer") if isinstance(auto, dict) else None
    if isinstance(entry, (list, tuple)):
        entry = next((e for e in entry if e), None)
    return entry if isinstance(entry, str) else ""


def load_tokenizer(tokenizer_dir: str | Path, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tokenizer_dir = Path(tokenizer_dir)
    cls = custom_code_class(tokenizer_dir)
    if cls and not trust_remote_code:
        raise TokenizerNeedsRemoteCode(
            f"glmtts tokenizer {tokenizer_dir} runs its own code ({cls}, from a .py file in that directory); "
            f"loading it needs trust_remote_code: set {TRUST_SETTING}=true if you trust this checkpoint")
    if cls:
        try:
            import tiktoken  # noqa: F401  (the published tokenizer's code imports it)
        except ImportError as e:  # pragma: no cover - tiktoken is pinned in requirements.txt
            raise TokenizerNeedsRemoteCode(f"glmtts tokenizer {tokenizer_dir} needs the tiktoken package") from e
    return AutoTokenizer.from_pretrained(str(tokenizer_dir), trust_remote_code=bool(cls) and trust_remote_code)
