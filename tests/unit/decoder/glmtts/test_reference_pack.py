"""Our glmtts modules against the official GLM-TTS code's outputs on random weights (tests/data/glmtts-reference:
generated from zai-org/GLM-TTS c5dc7ae; no official code). Tolerances are the pack's."""
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from services.decoder.engine.glmtts.flow import Flow, block_attention_mask, load_flow, read_flow_config
from services.decoder.engine.glmtts.hift import HiFTConfig, HiFTGenerator, load_hift
from services.decoder.engine.glmtts.mel import mel_filterbank, mel_spectrogram
from services.decoder.engine.glmtts.speech_tokenizer import SpeechTokenizer, VQEncoder, VQEncoderConfig

PACK = Path(__file__).resolve().parents[3] / "data" / "glmtts-reference"


def _max_diff(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a.float() - b.float()).abs().max())


# ------------------------------------------------------------------------------------------------------- flow

@pytest.fixture(scope="module")
def flow_case():
    flow = load_flow(PACK / "flow")
    return flow, load_file(str(PACK / "flow" / "flow_inputs.safetensors")), \
        load_file(str(PACK / "flow" / "flow_outputs.safetensors"))


def test_flow_published_flags_and_schedule(flow_case):
    flow, _, out = flow_case
    assert flow.spkr_emb_adaLN and flow.remove_spkr_concat_condition and not flow.speech_token_cfg
    assert flow.inference_cfg_rate == 0.7
    assert _max_diff(flow.time_grid(10).cpu(), out["t_span"]) < 1e-7


def test_flow_offline_matches_official(flow_case):
    flow, x, out = flow_case
    mel = flow.inference(x["token"], x["prompt_token"], x["prompt_feat"], x["embedding"], n_timesteps=10,
                         noise=x["noise"])
    assert _max_diff(mel, out["mel_offline"]) <= 1e-5


def test_flow_block_mask_matches_official(flow_case):
    flow, x, out = flow_case
    frames = [int(n / 12.5 * 22050 / 256) for n in (40, 25, 50, 200)]
    mask = block_attention_mask(frames, 354)
    assert torch.equal(mask, out["block_attn_mask"].bool())
    # one block-masked call, as the official inference_with_cache(is_causal=True, block_pattern=[P, 25, 50, 200])
    mel = flow.inference(x["token"], x["prompt_token"], x["prompt_feat"], x["embedding"], n_timesteps=10,
                         noise=x["noise"], attn_pattern=[40, 25, 50, 200])
    assert _max_diff(mel, out["mel_block"]) <= 1e-5


# ------------------------------------------------------------------------------------------------------- hift

@pytest.fixture(scope="module")
def hift_case(tmp_path_factory):
    d = tmp_path_factory.mktemp("hift")
    shutil.copyfile(PACK / "hift" / "hift.pt", d / "hift.pt")
    kw = json.loads((PACK / "hift" / "hift_kwargs.json").read_text())
    (d / "config.json").write_text(json.dumps({"base_channels": kw["HiFTGenerator"]["base_channels"],
                                               "f0_cond_channels": kw["ConvRNNF0Predictor"]["cond_channels"]}))
    return load_hift(d / "hift.pt"), load_file(str(PACK / "hift" / "hift_io.safetensors"))


def test_hift_f0_and_source(hift_case):
    voc, io = hift_case
    with torch.inference_mode():
        f0 = voc.model.f0_predictor(io["mel"])
    assert _max_diff(f0, io["f0"]) <= 1e-4 * float(io["f0"].abs().max())
    for seed in (0, 123):
        _, src = voc.vocode(io["mel"], seed=seed)
        assert _max_diff(src, io[f"source_seed{seed}"]) <= 1e-6


@pytest.mark.parametrize("seed", [0, 123])
def test_hift_waveform_matches_official(hift_case, seed):
    voc, io = hift_case
    wav, _ = voc.vocode(io["mel"], seed=seed)
    assert _max_diff(wav, io[f"wav_seed{seed}"]) <= 1e-6


def test_hift_decode_with_official_source(hift_case):
    voc, io = hift_case
    with torch.inference_mode():
        wav = voc.model.decode(io["mel"], io["source_seed0"])
    assert _max_diff(wav, io["wav_seed0"]) <= 1e-6


# ---------------------------------------------------------------------------------------------- speech tokens

def test_speech_token_ids_identical():
    tok = SpeechTokenizer.load(PACK / "speech_tokenizer")
    clips = load_file(str(PACK / "speech_tokenizer" / "clips_16k.safetensors"))
    clips.update(load_file(str(PACK / "speech_tokenizer" / "clip_31s_16k.safetensors")))   # two 30 s pieces
    expected = json.loads((PACK / "speech_tokenizer" / "token_ids.json").read_text())["token_ids"]
    assert sorted(clips) == sorted(expected)                      # every clip of the pack: 1.0, 2.3, 9.7, 31.0 s
    for name, clip in clips.items():
        assert tok.tokenize(clip.numpy()) == expected[name], name


# ------------------------------------------------------------------------------------------------------- mel

def test_prompt_mel_matches_official():
    io = load_file(str(PACK / "mel" / "mel_io.safetensors"))
    assert _max_diff(mel_filterbank(), io["mel_basis"]) <= 1e-7
    for name in ("speechlike_2.5s", "white_1.0s", "odd_len"):
        mel = mel_spectrogram(io[f"wav_{name}"])
        assert _max_diff(mel, io[f"mel_{name}"]) <= 1e-5, name
        assert _max_diff(mel.transpose(1, 2), io[f"prompt_feat_{name}"]) <= 1e-5, name


# ------------------------------------------------------------------------ full-size layouts (meta device)

def _layout(name):
    return {k: tuple(v) for k, v in json.loads((PACK / "configs" / "layouts" /
                                                f"{name}_state_dict_shapes.json").read_text())["shapes"].items()}


def _shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_full_size_flow_layout():
    with torch.device("meta"):
        flow = Flow(**read_flow_config(PACK / "configs" / "flow" / "config.yaml"))
    assert _shapes(flow) == _layout("flow")


def test_full_size_hift_layout():
    with torch.device("meta"):
        model = HiFTGenerator(HiFTConfig())
    assert _shapes(model) == _layout("hift")


def test_full_size_speech_tokenizer_layout():
    cfg = VQEncoderConfig.from_dict(json.loads((PACK / "configs" / "speech_tokenizer" / "config.json").read_text()))
    with torch.device("meta"):
        enc = VQEncoder(cfg)
    ours = _shapes(enc)
    official = _layout("speech_tokenizer")
    assert ours == official


def test_full_size_llm_layout():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig.from_json_file(str(PACK / "configs" / "llm" / "config.json"))
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    assert _shapes(model) == _layout("llm")


def test_tiny_test_checkpoint_uses_the_published_flags(glmtts_checkpoint):
    published = read_flow_config(PACK / "configs" / "flow" / "config.yaml")
    ours = read_flow_config(glmtts_checkpoint / "flow" / "config.yaml")
    for key in ("spkr_emb_adaLN", "speech_token_cfg", "remove_spkr_concat_condition", "mel_dim", "mel_framerate",
                "input_frame_rate"):
        assert ours[key] == published[key], key
