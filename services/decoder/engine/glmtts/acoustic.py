"""Speech tokens → 24 kHz audio, chunk by chunk: flow matching in block mode, then the HiFT vocoder.

Per segment, a :class:`SegmentRenderer` takes the tokens decoded so far at every chunk boundary. The flow produces
the mel of every complete block (block-causal: appending tokens never changes a finished block, see ``flow.py``);
the vocoder makes the excitation for the mel so far with the part already emitted pinned, and re-runs its decoder
only on the tail (16 frames of left context; its receptive field is under 12 frames), so emitted audio never
changes and the cost per chunk does not grow with the segment. Each chunk emits audio up to ``holdback`` (160 ms)
+ ``fade`` (20 ms) before the end; the next chunk cross-fades over the ``fade`` samples it re-renders. The noise of
both models is a function of (seed, segment), drawn once per segment, so rendering the whole segment at once
(:meth:`Acoustic.render_full`) gives the same audio as the streamed chunks except inside those short cross-fades.

Streaming blocks wait for ``lookahead`` tokens of right context (per block, last repeating; the published streaming
code looks ahead [12, 25, 100] tokens for its [25, 50, 200] blocks): without it a block's last frames differ from
the full-attention render by up to 0.47 on the reference pack, with 12/25/50 by 0.063 (tests/unit/decoder/glmtts/
test_acoustic_modes.py). When the whole text is wanted at once (unary, batch), :class:`OfflineRenderer` renders a
segment in one full-attention pass, as the published offline inference does.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from typing import Sequence

import numpy as np
import torch

from shared.errors import FailedPrecondition, InvalidArgument

from .checkpoint import Layout
from .lm_text import official_form
from .prompt import Prompt, conditioning_digest
from .scheduler import block_sizes

log = logging.getLogger("decoder.glmtts")

SAMPLE_RATE = 24000
VOCODER_CONTEXT = 16          # mel frames of left context when re-rendering the tail (receptive field < 12)


def _seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") & ((1 << 63) - 1)


def _nth(seq: Sequence[int], i: int) -> int:
    return int(seq[min(i, len(seq) - 1)])


def emit_schedule(blocks: Sequence[int], lookahead: int | Sequence[int]) -> list[int]:
    """Token counts between audio chunks when flow block *k* (``blocks``, last repeating) is produced once its
    ``lookahead[k]`` tokens of right context exist: [15, 25, 50] + [12, 25, 50] → chunks due at 27, 65, 140, 190, ...
    → [27, 38, 75, 50]."""
    las = [lookahead] if isinstance(lookahead, int) else list(lookahead)
    n = max(len(blocks), len(las))
    ends, total = [], 0
    for k in range(n):
        total += _nth(blocks, k)
        ends.append(total + _nth(las, k))
    return [ends[0]] + [b - a for a, b in zip(ends, ends[1:])] + [_nth(blocks, n)]


def _noise(flow, prompt: Prompt, seed: int, index: int, max_tokens: int) -> torch.Tensor:
    n_frames = flow.frames_for(len(prompt.speech_tokens) + max_tokens) + 1
    g = torch.Generator().manual_seed(_seed("flow", seed, index))
    return torch.randn(1, n_frames, flow.mel_dim, generator=g)


class Acoustic:
    def __init__(self, layout: Layout, device: torch.device, dtype: torch.dtype, *, n_timesteps: int = 10,
                 lookahead: int | Sequence[int] = 0, holdback_ms: float = 160.0, fade_ms: float = 20.0, prompt_cache: int = 64):
        self.layout = layout
        self.device, self.dtype = device, dtype
        self.n_timesteps = n_timesteps
        self.lookahead = lookahead
        self.holdback = int(holdback_ms * SAMPLE_RATE / 1000)
        self.fade = int(fade_ms * SAMPLE_RATE / 1000)
        self.flow = self.vocoder = self.tokenizer = None
        self.voices: dict[str, dict] = {}
        self._prompts: OrderedDict[object, Prompt] = OrderedDict()
        self._prompt_cache = prompt_cache
        self._prompts_lock = threading.Lock()     # the prompt thread fills the cache; the event loop looks it up

    def load(self) -> None:
        from .flow import load_flow
        from .hift import load_hift

        self.flow = load_flow(self.layout.flow, self.device, self.dtype)
        # the vocoder stays in float32 even on a GPU: in bf16 its output drifts by ~0.03 (measured against fp32)
        self.vocoder = load_hift(self.layout.hift, self.device, torch.float32, prefix_stable_noise=True)
        if self.layout.speech_tokenizer is not None:
            from .speech_tokenizer import SpeechTokenizer

            self.tokenizer = SpeechTokenizer.load(self.layout.speech_tokenizer, self.device)
        else:
            log.warning("glmtts checkpoint has no speech_tokenizer/: cloning from reference audio is unavailable; "
                        "checkpoint voices still work", extra={"path": str(self.layout.root)})
        if self.layout.voices.is_dir():
            for f in sorted(self.layout.voices.glob("*.json")):
                spec = json.loads(f.read_text())
                wav = f.with_suffix(".wav")
                spec["wav"] = str(wav) if wav.exists() else ""
                self.voices[f.stem] = spec

    # -- prompts ------------------------------------------------------------------------------------------------

    @staticmethod
    def prompt_key(voice) -> str:
        """The prompt cache key of a voice ("" = not cacheable). A cloned voice is known by (reference content,
        encoder id, transcript) — the same audio with another transcript or another encoder's embedding is another
        prompt — so a request may name it without sending its audio again."""
        if voice.reference_id:
            return "\x1f".join((voice.reference_id, voice.encoder, voice.prompt_text))
        if voice.prompt_pcm16k is not None and len(voice.prompt_pcm16k):
            return ""
        return f"voice:{voice.name or 'default'}"

    def cached_prompt(self, voice) -> Prompt | None:
        key = self.prompt_key(voice)
        with self._prompts_lock:
            prompt = self._prompts.get(key) if key else None
            if prompt is not None:
                self._prompts.move_to_end(key)
            return prompt

    def prompt(self, voice, encode_text) -> Prompt:
        """The LM prefix and acoustic conditioning of a voice; cached by :meth:`prompt_key` (bounded LRU)."""
        prompt = self.cached_prompt(voice)
        if prompt is not None:
            return prompt
        key = self.prompt_key(voice)
        prompt = self._build_prompt(voice, encode_text)
        if key:
            with self._prompts_lock:
                self._prompts[key] = prompt
                while len(self._prompts) > self._prompt_cache:
                    self._prompts.popitem(last=False)
        return prompt

    def _build_prompt(self, voice, encode_text) -> Prompt:
        from .mel import mel_spectrogram

        if voice.reference_id and (voice.prompt_pcm16k is None or not len(voice.prompt_pcm16k)):
            raise FailedPrecondition(f"config.speaker.prompt_pcm16k: the prompt of reference "
                                     f"{voice.reference_id[:16]!r} is not cached here and no audio came with it")
        if voice.prompt_pcm16k is not None and len(voice.prompt_pcm16k):
            if self.tokenizer is None:
                raise FailedPrecondition(
                    "this glmtts checkpoint has no speech_tokenizer/, so it cannot clone a voice from reference "
                    f"audio; use a checkpoint voice ({', '.join(self.voices) or 'none installed'}) or install a "
                    "checkpoint with its speech tokenizer")
            pcm = np.asarray(voice.prompt_pcm16k, dtype=np.float32)
            tokens = self.tokenizer.tokenize(pcm)
            if voice.prompt_pcm24k is not None and len(voice.prompt_pcm24k):
                wav24 = np.asarray(voice.prompt_pcm24k, dtype=np.float32)    # resampled once from the source
            else:                           # an older speaker stage: 16 kHz only (the mel's 7-8 kHz bands are lost)
                wav24 = _resample(pcm, 16000, SAMPLE_RATE)
            text = voice.prompt_text
            if voice.embedding is None:
                raise InvalidArgument("config.speaker.embedding", "a cloned voice needs its speaker embedding")
            emb = np.asarray(voice.embedding, dtype=np.float32)
        else:
            name = voice.name or "default"
            spec = self.voices.get(name)
            if spec is None:
                raise InvalidArgument("config.voice", f"unknown glmtts voice {name!r}; "
                                      f"available: {', '.join(self.voices) or 'none'}")
            tokens = [int(t) for t in spec.get("speech_tokens", [])]
            text = official_form(spec["prompt_text"]) if spec.get("prompt_text", "").strip() else ""
            emb = np.asarray(spec["embedding"], dtype=np.float32)
            wav24 = None
            if spec.get("wav"):
                import soundfile as sf

                audio, sr = sf.read(spec["wav"], dtype="float32", always_2d=True)
                wav24 = _resample(audio.mean(axis=1), sr, SAMPLE_RATE)
        if emb.shape != (192,):
            raise InvalidArgument("config.speaker.embedding", f"glmtts needs a 192-d speaker embedding (CAM++), "
                                  f"got {emb.shape[0]} values")
        feat = None
        if wav24 is not None and tokens:
            mel = mel_spectrogram(torch.from_numpy(wav24)[None])           # [1, 80, frames]
            # align prompt tokens and prompt frames: 2 mel frames per token
            n = min(len(tokens), mel.shape[-1] // 2)
            tokens = tokens[:n]
            feat = mel[:, :, : 2 * n].transpose(1, 2).to(self.device, self.dtype)
        elif not tokens:
            text = ""                   # no prompt speech: the prompt text would have nothing to align with
        text_ids = encode_text(text + " ") if text else []
        return Prompt(text_ids=text_ids, speech_tokens=list(tokens), feat=feat,
                      embedding=torch.from_numpy(emb)[None].to(self.device, self.dtype))

    # -- rendering ----------------------------------------------------------------------------------------------

    def segment(self, prompt: Prompt, seed: int, index: int, max_tokens: int, schedule: list[int],
                offline: bool = False):
        if offline:
            return OfflineRenderer(self, prompt, seed, index, max_tokens)
        return SegmentRenderer(self, prompt, seed, index, max_tokens, schedule)

    def render_offline(self, prompt: Prompt, seed: int, index: int, tokens: list[int], max_tokens: int) -> np.ndarray:
        """The segment in one full-attention flow pass and one vocoder pass (the published offline path)."""
        r = OfflineRenderer(self, prompt, seed, index, max_tokens)
        return r.push(tokens, True)

    def render_full(self, prompt: Prompt, seed: int, index: int, tokens: list[int], max_tokens: int,
                    schedule: list[int]) -> np.ndarray:
        """The whole segment in one go (no chunking): the reference the streamed chunks must match."""
        r = SegmentRenderer(self, prompt, seed, index, max_tokens, schedule)
        mel = self.flow.inference(torch.tensor([tokens]), r.prompt_token, prompt.feat, prompt.embedding,
                                  n_timesteps=self.n_timesteps, noise=r.noise,
                                  block_pattern=block_sizes(schedule, max(1, len(tokens))), lookahead=self.lookahead)
        return r.vocode_all(mel)


class SegmentRenderer:
    def __init__(self, acoustic: Acoustic, prompt: Prompt, seed: int, index: int, max_tokens: int,
                 schedule: list[int]):
        self.a = acoustic
        flow = acoustic.flow
        self.prompt_token = torch.tensor([prompt.speech_tokens], dtype=torch.long)
        self.noise = _noise(flow, prompt, seed, index, max_tokens)
        self.vocoder_seed = _seed("vocoder", seed, index)
        feat, embedding = prompt.feat, prompt.embedding
        self.conditioning = conditioning_digest(self.prompt_token, feat, embedding)   # exactly what the flow gets
        self.stream = flow.stream(self.prompt_token, feat, embedding, n_timesteps=acoustic.n_timesteps,
                                  block_pattern=block_sizes(schedule, max(1, max_tokens)),
                                  lookahead=acoustic.lookahead, noise=self.noise)
        self.fed = 0
        self.mels: list[torch.Tensor] = []
        self.excitation: torch.Tensor | None = None
        self.emitted = 0                 # samples handed out (the cross-fade region included)
        self.counted = 0                 # tokens already reported in chunks
        self.tail: np.ndarray | None = None

    def vocode_all(self, mel: torch.Tensor) -> np.ndarray:
        if mel.shape[-1] == 0:
            return np.zeros(0, np.float32)
        wav, _ = self.a.vocoder.vocode(mel, seed=self.vocoder_seed)
        return wav[0].float().cpu().numpy()

    @torch.inference_mode()
    def _vocode_tail(self, mel: torch.Tensor) -> tuple[np.ndarray, int]:
        """Render the audio from ``VOCODER_CONTEXT`` frames before the emitted point to the end of ``mel``.

        The excitation (F0 → harmonic source + noise) is made for the whole mel — it is cheap, and its noise is a
        function of the sample position — with the part already emitted pinned; the expensive decoder then runs on
        the tail only. Its receptive field is under 12 frames (measured: the published size differs from a full
        render by 2e-7 with 12 frames of context), so the tail equals the full render while the cost per chunk
        stays proportional to the chunk, not to the segment so far.
        """
        voc = self.a.vocoder
        mel = mel.to(voc.device, voc.dtype)
        src = voc.model.source(mel, torch.Generator(device=voc.device).manual_seed(self.vocoder_seed))
        if self.excitation is not None and self.emitted:
            n = min(self.emitted, src.shape[-1], self.excitation.shape[-1])
            src[:, :, :n] = self.excitation[:, :, :n]
        self.excitation = src
        hop = voc.hop_length
        start = max(0, self.emitted // hop - VOCODER_CONTEXT)
        wav = voc.model.decode(mel[:, :, start:], src[:, :, start * hop:])
        return wav[0].float().cpu().numpy(), start * hop

    def push(self, tokens: list[int], final: bool) -> np.ndarray:
        """All tokens of the segment so far → the audio that became final since the last call."""
        new = tokens[self.fed:]
        self.fed = len(tokens)
        if new:
            self.mels.append(self.stream.push(torch.tensor([new])))
        if final:
            self.mels.append(self.stream.finish())
            self.stream.close()
        mel = torch.cat(self.mels, dim=-1) if self.mels else None
        if mel is None or mel.shape[-1] == 0:
            return np.zeros(0, np.float32)
        wav, offset = self._vocode_tail(mel)
        total = offset + len(wav)
        end = total if final else max(self.emitted, total - self.a.holdback)
        out = wav[self.emitted - offset:end - offset].copy()
        if self.tail is not None and len(out):
            n = min(len(self.tail), len(out))
            ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
            out[:n] = self.tail[:n] * (1 - ramp) + out[:n] * ramp
        if final:
            self.tail = None
            self.emitted = end
            return out
        # hold the last `fade` samples back: the next render redoes them and cross-fades
        keep = max(0, len(out) - self.a.fade)
        self.tail = out[keep:].copy() if keep < len(out) else self.tail
        self.emitted += keep
        return out[:keep]


class OfflineRenderer:
    """A whole segment at once: nothing until the last token, then one full-attention flow pass (every frame sees
    every frame, as the published offline inference) and one vocoder pass. Same noise as the streamed renderer."""

    def __init__(self, acoustic: Acoustic, prompt: Prompt, seed: int, index: int, max_tokens: int):
        self.a, self.prompt = acoustic, prompt
        self.noise = _noise(acoustic.flow, prompt, seed, index, max_tokens)
        self.vocoder_seed = _seed("vocoder", seed, index)
        self.conditioning = conditioning_digest(torch.tensor([prompt.speech_tokens], dtype=torch.long), prompt.feat,
                                                prompt.embedding)
        self.counted = 0

    @torch.inference_mode()
    def mel(self, tokens: list[int]) -> torch.Tensor:
        p = self.prompt
        return self.a.flow.inference(torch.tensor([tokens]), torch.tensor([p.speech_tokens], dtype=torch.long),
                                     p.feat, p.embedding, n_timesteps=self.a.n_timesteps, noise=self.noise)

    @torch.inference_mode()
    def push(self, tokens: list[int], final: bool) -> np.ndarray:
        if not final or not tokens:
            return np.zeros(0, np.float32)
        mel = self.mel(tokens)
        if mel.shape[-1] == 0:
            return np.zeros(0, np.float32)
        wav, _ = self.a.vocoder.vocode(mel, seed=self.vocoder_seed)
        return wav[0].float().cpu().numpy()


def _resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    if sr_in == sr_out:
        return np.asarray(x, dtype=np.float32)
    import soxr

    return soxr.resample(np.asarray(x, dtype=np.float32), sr_in, sr_out).astype(np.float32)
