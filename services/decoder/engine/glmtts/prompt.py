"""What a GLM-TTS voice contributes, and how GLM-TTS lays a segment out for its LM.

The scheduler (``scheduler.py``) only keeps books: it never looks inside a prompt. The engine gives it a
:class:`GLMTTSLayout`, which knows the published input layout::

    [prompt text, history texts, this text, <|begin_of_audio|>, prompt speech, history speech]

(history = earlier segments of the same stream, dropped oldest first to stay within ``max_history_tokens`` of speech
context, as the published inference does), the id fed after each sampled speech token, and the length rule
(between ``min_ratio`` and ``max_ratio`` speech tokens per text id).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch


@dataclass
class Prompt:
    """What a voice contributes: LM prefix (prompt text ids + prompt speech tokens) and acoustic conditioning."""

    text_ids: list[int]
    speech_tokens: list[int]                 # 0..32767
    feat: torch.Tensor | None                # [1, frames, 80] prompt mel (24 kHz), or None
    embedding: torch.Tensor                  # [1, 192]


def conditioning_digest(prompt_token: torch.Tensor, feat: torch.Tensor | None, embedding: torch.Tensor) -> str:
    """A short hash of the exact tensors that condition the flow (prompt tokens, prompt mel, speaker embedding):
    two streams with the same digest were spoken with the same voice conditioning."""
    h = hashlib.sha256()
    for t in (prompt_token, feat, embedding):
        if t is None:
            h.update(b"none")
        else:
            a = t.detach().to("cpu", torch.float32).contiguous().numpy()
            h.update(repr(a.shape).encode())
            h.update(a.tobytes())
    return h.hexdigest()[:16]


class GLMTTSLayout:
    """The GLM-TTS LM input layout, handed to the scheduler by the engine."""

    def __init__(self, boa: int, ats: int, *, max_history_tokens: int = 750, min_ratio: float = 2.0,
                 max_ratio: float = 20.0):
        self.boa = boa                        # <|begin_of_audio|>
        self.ats = ats                        # <|audio_0|>: speech token t is fed as ats + t
        self.max_history_tokens = max_history_tokens
        self.min_ratio, self.max_ratio = min_ratio, max_ratio

    def length_bounds(self, text_ids: list[int]) -> tuple[int, int]:
        n_text = max(1, len(text_ids))
        return int(n_text * self.min_ratio), int(n_text * self.max_ratio)

    def segment_input(self, prompt: Prompt, history: list, text_ids: list[int]) -> list[int]:
        """The ids to decode the next segment from. ``history`` (objects with ``text_ids`` and ``tokens``, oldest
        first) is pruned in place, oldest first, to stay within ``max_history_tokens`` of speech context."""
        est = int(len(text_ids) * (len(prompt.speech_tokens) + sum(len(h.tokens) for h in history) + 1)
                  / max(1, len(prompt.text_ids) + sum(len(h.text_ids) for h in history)))
        while history and (len(prompt.speech_tokens) + sum(len(h.tokens) for h in history) + est
                           > self.max_history_tokens):
            history.pop(0)
        text = list(prompt.text_ids)
        speech = list(prompt.speech_tokens)
        for h in history:
            text += h.text_ids
            speech += h.tokens
        return text + list(text_ids) + [self.boa] + [self.ats + t for t in speech]

    def token_input(self, token: int) -> int:
        """The id fed to the LM after it sampled speech token ``token``."""
        return self.ats + token
