"""Context-aware polyphone disambiguation: the g2pM BiLSTM (weights shipped in the PyPI wheel ``g2pM``), run here
with our own float32 numpy inference.

The network reads the whole clause (one BiLSTM layer, 64-d embeddings, 32-d states each way) and scores every
reading class at a polyphonic character. Unlike g2pM's own ``__call__`` we restrict the choice to the readings the
character actually has (g2pM's CEDICT digest), return the probability of the chosen reading, and compute the
input projections of all time steps in one matrix product (only the recurrent part is a per-step loop).
"""
from __future__ import annotations

import os
import pickle
import threading
from collections import OrderedDict

import numpy as np

from .pinyin import is_valid_syllable
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
        self.emb = sd["embedding.weight"]
        H = sd["lstm.weight_hh_l0"].shape[1]
        self.hidden = H
        # sigmoid(x) = (1 + tanh(x / 2)) / 2: pre-halve the i, f, o gate rows so that one tanh per step serves all
        scale = np.full(4 * H, 0.5, dtype=np.float32)
        scale[2 * H:3 * H] = 1.0
        self.w_ih = [(sd[f"lstm.weight_ih_l0{sfx}"].T * scale).astype(np.float32) for sfx in ("", "_reverse")]
        self.b = [((sd[f"lstm.bias_ih_l0{sfx}"] + sd[f"lstm.bias_hh_l0{sfx}"]) * scale).astype(np.float32)
                  for sfx in ("", "_reverse")]
        self.w_hh = np.stack([(sd[f"lstm.weight_hh_l0{sfx}"].T * scale) for sfx in ("", "_reverse")]
                             ).astype(np.float32)                    # [2, H, 4H]
        self.h0w, self.h0b = sd["logit_layer.0.weight"].T.copy(), sd["logit_layer.0.bias"]
        self.h1w, self.h1b = sd["logit_layer.2.weight"].T.copy(), sd["logit_layer.2.bias"]
        self._unk = self.char2idx[_UNK]
        self._bos, self._eos = self.char2idx[_BOS], self.char2idx[_EOS]

    def is_polyphonic(self, ch: str) -> bool:
        return ch in self.candidates

    def readings(self, ch: str) -> list[str]:
        ids = self.candidates.get(ch)
        return [self.classes[i] for i in ids] if ids is not None else []

    def _states(self, text: str) -> np.ndarray:
        """[len(text) + 2, 2H] BiLSTM outputs (forward ‖ backward) over BOS + text + EOS."""
        ids = [self._bos] + [self.char2idx.get(c, self._unk) for c in text] + [self._eos]
        x = self.emb[np.asarray(ids)]
        T, H = x.shape[0], self.hidden
        gin = np.empty((T, 2, 4 * H), dtype=np.float32)      # both directions advance in the same loop
        gin[:, 0] = x @ self.w_ih[0] + self.b[0]
        gin[:, 1] = (x @ self.w_ih[1] + self.b[1])[::-1]
        h = np.zeros((2, 1, H), dtype=np.float32)
        c = np.zeros((2, H), dtype=np.float32)
        out = np.empty((T, 2, H), dtype=np.float32)
        w_hh = self.w_hh
        for t in range(T):
            g = np.tanh(gin[t] + np.matmul(h, w_hh)[:, 0])  # gate order i f g o (PyTorch)
            ifo = g * 0.5 + 0.5
            c = ifo[:, H:2 * H] * c + ifo[:, :H] * g[:, 2 * H:3 * H]
            hh = ifo[:, 3 * H:] * np.tanh(c)
            out[t] = hh
            h = hh[:, None, :]
        return np.concatenate([out[:, 0], out[::-1, 1]], axis=1)

    def _logits(self, text: str, positions: list[int]) -> np.ndarray:
        states = self._states(text)[np.asarray(positions) + 1]
        return np.maximum(states @ self.h0w + self.h0b, 0.0) @ self.h1w + self.h1b

    def _distribution(self, ch: str, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cand = self.candidates[ch]
        z = logits[cand]
        z = np.exp(z - z.max())
        return cand, z / z.sum()

    def predict(self, text: str, positions: list[int]) -> list[tuple[str, float]]:
        """For each position (a polyphonic character of ``text``): (reading, probability among its readings)."""
        if not positions:
            return []
        logits = self._logits(text, positions)
        out = []
        for k, pos in enumerate(positions):
            cand, p = self._distribution(text[pos], logits[k])
            best = int(p.argmax())
            out.append((self.classes[cand[best]], float(p[best])))
        return out

    def probabilities(self, text: str, pos: int) -> dict[str, float]:
        """All candidate readings of ``text[pos]`` with their probabilities (for tests and diagnostics)."""
        cand, p = self._distribution(text[pos], self._logits(text, [pos])[0])
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
        self._cache: OrderedDict[str, dict[int, str]] = OrderedDict()
        self._cache_lock = threading.Lock()

    @property
    def net(self) -> PolyphoneModel:
        if self._net is None:
            self._net = model()
        return self._net

    def warmup(self) -> None:
        self.net.predict("行", [0])

    def decide(self, text: str, runs) -> dict[int, str]:
        """``runs``: {offset in text: run} with the run's ``syl`` and ``in_phrase`` (see g2p.ZhRun).
        → {position in text: reading} for the polyphonic characters."""
        with self._cache_lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                return hit
        net = self.net
        positions, phrase, trusted = [], [], []
        for offset, run in runs.items():
            for j, ch in enumerate(run.text):
                if net.is_polyphonic(ch):
                    positions.append(offset + j)
                    phrase.append(run.syl[j])
                    trusted.append(run.in_phrase[j])
        out: dict[int, str] = {}
        phrase_pos = {offset + j for offset, run in runs.items() for j, fl in enumerate(run.in_phrase) if fl}
        for pos, (reading, p), ph, tr in zip(positions, net.predict(text, positions), phrase, trusted):
            if tr and p <= self.phrase_trust and ph in net.readings(text[pos]):
                reading = ph
            if is_valid_syllable(reading):
                out[pos] = reading
        out.update(context_readings(text, lambda pos: pos in phrase_pos))
        with self._cache_lock:
            self._cache[text] = out
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return out
