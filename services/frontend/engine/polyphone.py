"""Context-aware polyphone disambiguation: the g2pM BiLSTM (weights shipped in the PyPI wheel ``g2pM``), run here
with our own float32 numpy inference.

The network reads the whole clause (one BiLSTM layer, 64-d embeddings, 32-d states each way) and scores every
reading class at a polyphonic character. Unlike g2pM's own ``__call__`` we restrict the choice to the readings the
character actually has (g2pM's CEDICT digest), return the probability of the chosen reading, and compute the
input projection of every character once at load (a step's input is a row lookup); both directions advance in one
small matrix-vector product per step, and the last layer is computed for the character's own readings only. No
matrix-matrix product is left: OpenBLAS runs those multi-threaded, which stalls for milliseconds on a busy machine.
"""
from __future__ import annotations

import os
import pickle
import threading
from collections import OrderedDict

import numpy as np

from shared.pinyin import is_valid_syllable

from .rules import context_readings

_BOS, _EOS, _UNK = "시", "끝", "<UNK>"   # g2pM's sentence markers and unknown-character token


def _syllable(p: str) -> str:
    return p.replace("u:", "v").lower()


class PolyphoneModel:
    """Loaded once per process (a few MB); ``predict`` is thread-safe (no shared mutable state)."""

    def __init__(self, folder: str | None = None):
        if folder is None:
            import g2pM

            folder = os.path.dirname(os.path.abspath(g2pM.__file__))

        def load(name):
            with open(os.path.join(folder, name), "rb") as f:
                return pickle.load(f)  # noqa: S301 - files of the pinned g2pM wheel

        sd = {k: np.asarray(v, dtype=np.float32) for k, v in load("np_ckpt.pkl").items()}
        self.char2idx: dict[str, int] = load("char2idx.pkl")
        class2idx: dict[str, int] = load("class2idx.pkl")
        cedict: dict[str, list[str]] = load("digest_cedict.pkl")
        self.classes = [""] * len(class2idx)
        for pron, idx in class2idx.items():
            self.classes[idx] = _syllable(pron)
        index = {p: i for i, p in enumerate(self.classes)}
        # polyphonic characters → indices of their candidate classes
        self.candidates: dict[str, np.ndarray] = {}
        for ch, prons in cedict.items():
            ids = sorted({index[_syllable(p)] for p in prons if _syllable(p) in index})
            if len(ids) > 1:
                self.candidates[ch] = np.array(ids, dtype=np.int64)
        emb = sd["embedding.weight"]
        H = sd["lstm.weight_hh_l0"].shape[1]
        self.hidden = H
        # sigmoid(x) = (1 + tanh(x / 2)) / 2: pre-halve the i, f, o gate rows so that one tanh per step serves all
        scale = np.full(4 * H, 0.5, dtype=np.float32)
        scale[2 * H:3 * H] = 1.0
        # the input projection of every character, computed once: a step's input is a row lookup, not a matrix
        # product (a [T, 64] x [64, 128] product goes to multi-threaded BLAS, which stalls on a busy machine)
        self.proj = [np.ascontiguousarray(
            (emb @ sd[f"lstm.weight_ih_l0{sfx}"].T + sd[f"lstm.bias_ih_l0{sfx}"] + sd[f"lstm.bias_hh_l0{sfx}"]) * scale,
            dtype=np.float32) for sfx in ("", "_reverse")]                  # 2 x [vocab, 4H]
        # both directions advance in one step: h = [h_fwd | h_bwd] times a block-diagonal [2H, 8H] matrix
        w_hh = np.zeros((2 * H, 8 * H), dtype=np.float32)
        for d, sfx in enumerate(("", "_reverse")):
            w_hh[d * H:(d + 1) * H, d * 4 * H:(d + 1) * 4 * H] = sd[f"lstm.weight_hh_l0{sfx}"].T * scale
        self.w_hh = w_hh
        self.h0w, self.h0b = sd["logit_layer.0.weight"].T.copy(), sd["logit_layer.0.bias"]
        h1w, h1b = sd["logit_layer.2.weight"].T, sd["logit_layer.2.bias"]
        # the last layer only for each polyphonic character's own readings
        self.out_layer = {ch: (np.ascontiguousarray(h1w[:, ids]), h1b[ids]) for ch, ids in self.candidates.items()}
        self._unk = self.char2idx[_UNK]
        self._bos, self._eos = self.char2idx[_BOS], self.char2idx[_EOS]

    def is_polyphonic(self, ch: str) -> bool:
        return ch in self.candidates

    def readings(self, ch: str) -> list[str]:
        ids = self.candidates.get(ch)
        return [self.classes[i] for i in ids] if ids is not None else []

    def _states(self, text: str) -> np.ndarray:
        """[len(text) + 2, 2H] BiLSTM outputs (forward ‖ backward) over BOS + text + EOS."""
        ids = np.asarray([self._bos] + [self.char2idx.get(c, self._unk) for c in text] + [self._eos])
        H, T = self.hidden, len(ids)
        gin = np.concatenate([self.proj[0][ids], self.proj[1][ids[::-1]]], axis=1)   # [T, 8H]; backward reversed
        out = np.empty((T, 2, H), dtype=np.float32)
        h = np.zeros(2 * H, dtype=np.float32)
        c = np.zeros((2, H), dtype=np.float32)
        z = np.empty(8 * H, dtype=np.float32)
        g = z.reshape(2, 4 * H)                             # per direction: gates i f g o (PyTorch order)
        sig = np.empty((2, 4 * H), dtype=np.float32)
        tc = np.empty((2, H), dtype=np.float32)
        w_hh = self.w_hh
        s_i, s_f, s_o, g_g = sig[:, :H], sig[:, H:2 * H], sig[:, 3 * H:], g[:, 2 * H:3 * H]   # views, made once
        for t, row in enumerate(gin):
            np.dot(h, w_hh, out=z)
            z += row
            np.tanh(z, out=z)
            np.multiply(g, 0.5, out=sig)
            sig += 0.5
            c *= s_f
            c += s_i * g_g
            np.tanh(c, out=tc)
            np.multiply(s_o, tc, out=out[t])
            h = out[t].reshape(2 * H)
        return np.concatenate([out[:, 0], out[::-1, 1]], axis=1)

    def _distributions(self, text: str, positions: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per position: (candidate class ids, their probabilities)."""
        states = self._states(text)
        out = []
        for pos in positions:
            hidden = np.maximum(np.dot(states[pos + 1], self.h0w) + self.h0b, 0.0)
            w, b = self.out_layer[text[pos]]
            z = np.dot(hidden, w) + b
            z = np.exp(z - z.max())
            out.append((self.candidates[text[pos]], z / z.sum()))
        return out

    def predict(self, text: str, positions: list[int]) -> list[tuple[str, float]]:
        """For each position (a polyphonic character of ``text``): (reading, probability among its readings)."""
        if not positions:
            return []
        out = []
        for cand, p in self._distributions(text, positions):
            best = int(p.argmax())
            out.append((self.classes[cand[best]], float(p[best])))
        return out

    def probabilities(self, text: str, pos: int) -> dict[str, float]:
        """All candidate readings of ``text[pos]`` with their probabilities (for tests and diagnostics)."""
        cand, p = self._distributions(text, [pos])[0]
        return {self.classes[i]: float(q) for i, q in zip(cand, p)}


_model: PolyphoneModel | None = None
_lock = threading.Lock()


def model() -> PolyphoneModel:
    global _model
    if _model is None:
        with _lock:
            if _model is None:
                _model = PolyphoneModel()
    return _model


# A reading from a phrase of >= 2 characters in pypinyin's table stands unless the network is surer than this of
# another reading. 1.0 = the phrase table always wins there (CPP dev: 97.6 %; 97.7 % at 0.95, but then the network
# overrides good phrase readings such as 行长 hang2 zhang3, so we keep the phrase table).
PHRASE_TRUST = 1.0
CACHE_SIZE = 4096


class Disambiguator:
    """Chooses the reading of each polyphonic character of a segment: the phrase table where it is trusted, else the
    network's choice in context, then our context rules (``rules.py``). Results are cached per segment text."""

    def __init__(self, net: PolyphoneModel | None = None, phrase_trust: float = PHRASE_TRUST):
        self._net = net
        self.phrase_trust = phrase_trust
        self._cache: OrderedDict[tuple, dict[int, str]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.network_calls = 0      # segments the network ran on (diagnostics, tests)

    @property
    def net(self) -> PolyphoneModel:
        if self._net is None:
            self._net = model()
        return self._net

    def warmup(self) -> None:
        self.net.predict("行", [0])

    def clear_cache(self) -> None:
        with self._cache_lock:
            self._cache.clear()

    def decide(self, text: str, runs) -> dict[int, str]:
        """``runs``: {offset in text: run} with the run's ``syl`` and ``in_phrase`` (see g2p.ZhRun).
        → {position in text: reading} for the polyphonic characters."""
        key = (text, tuple((a, tuple(r.words)) for a, r in runs.items()))   # jieba's words change with the dictionary
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        net = self.net
        phrase_pos = {offset + j for offset, run in runs.items() for j, fl in enumerate(run.in_phrase) if fl}
        ruled = context_readings(text, lambda pos: pos in phrase_pos)      # our rules win over everything below
        out: dict[int, str] = {}
        positions = []          # polyphones that neither a trusted phrase nor a rule settles: the network decides
        for offset, run in runs.items():
            for j, ch in enumerate(run.text):
                pos = offset + j
                if not net.is_polyphonic(ch) or pos in ruled:
                    continue
                if run.in_phrase[j] and self.phrase_trust >= 1.0 and run.syl[j] in net.readings(ch):
                    if is_valid_syllable(run.syl[j]):
                        out[pos] = run.syl[j]
                else:
                    positions.append((pos, run.syl[j], run.in_phrase[j]))
        if positions:                     # one network pass per segment, and none when everything is settled
            self.network_calls += 1
            for (pos, ph, tr), (reading, p) in zip(positions, net.predict(text, [q[0] for q in positions])):
                if tr and p <= self.phrase_trust and ph in net.readings(text[pos]):
                    reading = ph
                if is_valid_syllable(reading):
                    out[pos] = reading
        out.update(ruled)
        with self._cache_lock:
            self._cache[key] = out
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return out
