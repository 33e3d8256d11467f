"""The GLM-TTS checkpoint layout, and a writer of small randomly initialized checkpoints in exactly that layout.

A checkpoint directory (the published one, ``huggingface-cli download zai-org/GLM-TTS --local-dir ckpt``) holds::

    llm/                        HF Llama (config.json + safetensors), AutoModelForCausalLM
    vq32k-phoneme-tokenizer/    HF tokenizer with <|audio_0|>..<|audio_32767|>, <|begin_of_audio|>, <|user|>
    flow/config.yaml, flow.pt   flow-matching DiT (hyperpyyaml config, state dict)
    hift/hift.pt                HiFT vocoder, mel → 24 kHz
    speech_tokenizer/           Whisper-VQ speech tokenizer (optional here: needed to clone from raw audio)
    voices/<name>.json          ours, optional: ready voices {prompt_text, speech_tokens, embedding}
    voices/<name>.wav           ours, optional: the voice's prompt audio (its mel conditions the flow)

``python -m services.decoder.engine.glmtts.checkpoint --out DIR --size 10m|50m`` (``make tiny-checkpoint``) writes
a random one for tests and benchmarks: it sounds like noise, but every shape, name and token id is the real one.
"""
from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("decoder.glmtts")

TOKENIZER_DIRS = ("vq32k-phoneme-tokenizer", "tokenizer")


@dataclass
class Layout:
    root: Path
    llm: Path
    tokenizer: Path
    flow: Path
    hift: Path
    speech_tokenizer: Path | None
    voices: Path

    @classmethod
    def of(cls, root: str | Path) -> "Layout":
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(
                f"glmtts checkpoint directory {root} does not exist; set TTS_DECODER_GLMTTS_PATH to a GLM-TTS "
                f"checkpoint (or run `make tiny-checkpoint` for a random test one)")
        tok = next((root / d for d in TOKENIZER_DIRS if (root / d).is_dir()), root / TOKENIZER_DIRS[0])
        missing = [str(p) for p in (root / "llm" / "config.json", tok, root / "flow" / "config.yaml",
                                    root / "flow" / "flow.pt", root / "hift" / "hift.pt") if not p.exists()]
        if missing:
            raise FileNotFoundError(f"glmtts checkpoint {root} is incomplete; missing: {', '.join(missing)}")
        st = root / "speech_tokenizer"
        return cls(root, root / "llm", tok, root / "flow", root / "hift" / "hift.pt",
                   st if (st / "config.json").exists() else None, root / "voices")


# -- tiny checkpoints ---------------------------------------------------------------------------------------------

SIZES = {
    # ~12M parameters (tied embeddings), and ~53M (untied, grouped-query attention)
    "10m": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                intermediate_size=768, tie_word_embeddings=True,
                flow=dict(trans_dim=128, depth=2, heads=4), hift=dict(base_channels=32)),
    "50m": dict(hidden_size=512, num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=4,
                intermediate_size=1536, tie_word_embeddings=False,
                flow=dict(trans_dim=192, depth=4, heads=4), hift=dict(base_channels=64)),
}


def write_tokenizer(out: Path) -> int:
    """A byte-level tokenizer (256 byte symbols, no merges: any text encodes) plus the special, speech and phoneme
    tokens, saved in HF format. Returns its vocabulary size."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in _specials()])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.save_pretrained(str(out))
    return len(fast)


TIKTOKEN_CLASS = "tokenization_glmtts.TiktokenGLMTokenizer"


def _specials() -> list[str]:
    from .phonemes import all_tokens

    # pinyin initials and toned finals, as in the published tokenizer
    return (["<|endoftext|>", "<|user|>", "<|begin_of_audio|>"] + [f"<|audio_{i}|>" for i in range(32768)]
            + all_tokens())


def write_tiktoken_tokenizer(out: Path, merged_text: str = "你好世界欢迎使用我们的") -> int:
    """A tokenizer in the published ``vq32k-phoneme-tokenizer`` format: tiktoken BPE ranks in ``tokenizer.model``
    (the 256 bytes, then merges that make each character of ``merged_text`` one token), our tokenizer class as
    custom code (``tokenization_glmtts.py``, named by ``auto_map``: loading needs ``trust_remote_code``), and the
    special, speech and phoneme tokens as added tokens. Returns its vocabulary size."""
    import base64
    import shutil

    from . import tiktoken_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    ranks: dict[bytes, int] = {bytes([b]): b for b in range(256)}
    for ch in dict.fromkeys(merged_text):
        data = ch.encode("utf-8")
        for n in range(2, len(data) + 1):
            ranks.setdefault(data[:n], len(ranks))
    with open(out / "tokenizer.model", "wb") as f:
        for token, rank in ranks.items():
            f.write(base64.b64encode(token) + b" " + str(rank).encode() + b"\n")
    shutil.copyfile(tiktoken_tokenizer.__file__, out / (TIKTOKEN_CLASS.split(".")[0] + ".py"))
    n = len(ranks)
    added = {str(n + i): {"content": s, "special": True, "lstrip": False, "rstrip": False, "normalized": False,
                          "single_word": False} for i, s in enumerate(_specials())}
    config = {"tokenizer_class": TIKTOKEN_CLASS.split(".")[1], "auto_map": {"AutoTokenizer": [TIKTOKEN_CLASS, None]},
              "added_tokens_decoder": added, "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
              "clean_up_tokenization_spaces": False, "model_max_length": 131072}
    (out / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=1))
    return n + len(added)


def write_llm(out: Path, vocab_size: int, size: str, seed: int = 0) -> int:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    spec = {k: v for k, v in SIZES[size].items() if k not in ("flow", "hift")}
    # initializer_range 0.1 (not 0.02): a random model whose logits differ enough that greedy decoding varies
    cfg = LlamaConfig(vocab_size=vocab_size, max_position_embeddings=4096, rms_norm_eps=1e-5, initializer_range=0.1,
                      rope_theta=10000.0, bos_token_id=None, eos_token_id=None, pad_token_id=None, **spec)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(str(out), safe_serialization=True)
    return sum(p.numel() for p in model.parameters())


def write_voice(voices: Path, name: str, *, seed: int = 0, prompt_text: str = "你好，欢迎使用。",
                seconds: float = 2.0, sample_rate: int = 24000) -> None:
    """A ready voice: random speech tokens for its prompt, a random unit embedding, and a synthetic prompt audio."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    n_tokens = int(seconds * 25)
    emb = rng.standard_normal(192).astype(np.float32)
    emb /= np.linalg.norm(emb)
    voices.mkdir(parents=True, exist_ok=True)
    (voices / f"{name}.json").write_text(json.dumps({
        "prompt_text": prompt_text, "speech_tokens": rng.integers(0, 32768, n_tokens).tolist(),
        "embedding": [round(float(x), 6) for x in emb]}, ensure_ascii=False))
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    audio = 0.3 * np.sin(2 * np.pi * np.cumsum(f0) / sample_rate) + 0.02 * rng.standard_normal(t.size)
    sf.write(str(voices / f"{name}.wav"), audio.astype(np.float32), sample_rate, subtype="PCM_16")


def write_tiny_checkpoint(out: str | Path, size: str = "10m", seed: int = 0) -> dict:
    from .flow import write_tiny_flow
    from .hift import write_tiny_hift
    from .speech_tokenizer import write_tiny_speech_tokenizer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vocab = write_tokenizer(out / TOKENIZER_DIRS[0])
    n_params = write_llm(out / "llm", vocab, size, seed)
    spec = SIZES[size]
    # the published flag choices (flow/config.yaml of the released checkpoint): speaker embedding in every layer's
    # adaLN, no speaker concat in the condition, no token CFG (the unconditional pass keeps the tokens)
    write_tiny_flow(out / "flow", vocab_size=32768, seed=seed, spkr_emb_adaLN=True, remove_spkr_concat_condition=True,
                    speech_token_cfg=False, **spec["flow"])
    write_tiny_hift(out / "hift" / "hift.pt", seed=seed, **spec["hift"])
    write_tiny_speech_tokenizer(out / "speech_tokenizer", seed=seed)
    write_voice(out / "voices", "default", seed=seed)
    info = {"size": size, "llm_parameters": n_params, "vocab_size": vocab, "seed": seed}
    (out / "TINY_CHECKPOINT.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


PUBLISHED_CONFIGS = Path(__file__).resolve().parents[4] / "configs" / "glmtts-published"


def write_published_size_checkpoint(out: str | Path, device: str = "cpu", seed: int = 0) -> dict:
    """A random checkpoint at the published sizes (1.5B LLM from ``configs/glmtts-published``), for benchmarks on a
    GPU: the LLM is initialised on ``device`` and saved in bf16 (~3 GB); the flow and vocoder at their published
    sizes; the speech tokenizer at the published width/depth below its quantizer (d_model 1280, 16 layers)."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from .flow import Flow, read_flow_config
    from .hift import HiFTConfig, write_tiny_hift
    from .speech_tokenizer import write_tiny_speech_tokenizer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vocab = write_tokenizer(out / TOKENIZER_DIRS[0])
    cfg = LlamaConfig.from_json_file(str(PUBLISHED_CONFIGS / "llm" / "config.json"))
    if vocab > cfg.vocab_size:
        raise ValueError(f"tokenizer has {vocab} ids, the published LLM {cfg.vocab_size}")
    cfg.bos_token_id = cfg.eos_token_id = None
    cfg.initializer_range = 0.1            # as the tiny ones: random logits that vary enough to sample from
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(str(out / "llm"), safe_serialization=True)
    del model
    (out / "flow").mkdir(exist_ok=True)
    shutil.copy(PUBLISHED_CONFIGS / "flow" / "config.yaml", out / "flow" / "config.yaml")
    gen = torch.Generator().manual_seed(seed)
    flow = Flow(**read_flow_config(out / "flow" / "config.yaml"))
    with torch.no_grad():
        for name, p in flow.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (1.0 if name.endswith("text_embed.weight") else 0.02))
    torch.save(flow.state_dict(), out / "flow" / "flow.pt")
    hift = HiFTConfig()
    write_tiny_hift(out / "hift" / "hift.pt", base_channels=hift.base_channels,
                    f0_cond_channels=hift.f0_cond_channels, seed=seed)
    write_tiny_speech_tokenizer(out / "speech_tokenizer", d_model=1280, layers=16, heads=20, seed=seed)
    write_voice(out / "voices", "default", seed=seed)
    info = {"size": "full", "llm_parameters": n_params, "vocab_size": vocab, "seed": seed,
            "flow_parameters": sum(p.numel() for p in flow.parameters())}
    (out / "TINY_CHECKPOINT.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description="Write a random GLM-TTS-format checkpoint for tests and benchmarks")
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", choices=sorted(SIZES), default="10m")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    info = write_tiny_checkpoint(args.out, args.size, args.seed)
    print(f"wrote {args.out}: {info['llm_parameters'] / 1e6:.1f}M-parameter LLM, vocabulary {info['vocab_size']}")


if __name__ == "__main__":
    main()
