"""The polyphone network (our numpy inference of the g2pM BiLSTM) against g2pM's own inference, and the rule that it
runs only where neither a trusted phrase nor a context rule settles a polyphone."""
import numpy as np
import pytest

from services.frontend.engine.g2p import G2P
from services.frontend.engine.polyphone import Disambiguator, model

SENTENCES = ["我们会为每位用户提供专属客服", "他长大以后当了银行行长", "请于三日内还款，还有问题吗", "为"]


def _g2pm_logits(g2pm, text, pos):
    """Logits of g2pM's own numpy code (the package's LSTM cells and output layer) at ``pos`` of ``text``."""
    ids = [g2pm.char2idx["시"]] + [g2pm.char2idx.get(c, g2pm.char2idx["<UNK>"]) for c in text] + [g2pm.char2idx["끝"]]
    ids = np.array([ids], dtype=np.int32)
    rev = g2pm.reverse_sequence(ids, np.sum(np.sign(ids), axis=1))
    fw_emb, bw_emb = g2pm.get_embedding(ids), g2pm.get_embedding(rev)
    fw = bw = None
    fws, bws = [], []
    for t in range(ids.shape[1]):
        fw, bw = g2pm.fw_lstm_cell(fw_emb[:, t], fw), g2pm.bw_lstm_cell(bw_emb[:, t], bw)
        fws.append(fw[0][0])
        bws.append(bw[0][0])
    states = np.concatenate([np.stack(fws), np.stack(bws)[::-1]], axis=1)
    return g2pm.fc_layer(states[pos + 1][None])[0]


@pytest.mark.parametrize("text", SENTENCES)
def test_network_equals_g2pm_own_inference(text):
    from g2pM import G2pM

    g2pm, net = G2pM(), model()
    for pos, ch in enumerate(text):
        if not net.is_polyphonic(ch):
            continue
        z = _g2pm_logits(g2pm, text, pos)
        ids = net.candidates[ch]
        ref = np.exp(z[ids] - z[ids].max())
        ref /= ref.sum()
        ours = net.probabilities(text, pos)
        assert np.allclose([ours[net.classes[i]] for i in ids], ref, atol=1e-5), (text, ch)


def _runs(text):
    return {0: G2P.prepare_run(text)}


def test_network_skipped_when_phrases_and_rules_settle_every_polyphone():
    d = Disambiguator()
    d.decide("银行行长", _runs("银行行长"))            # 行/长 settled by the phrase table and the rules
    assert d.network_calls == 0
    d.decide("很高兴为您服务", _runs("很高兴为您服务"))  # 为 settled by a context rule (为您 wèi), the rest by phrases
    assert d.network_calls == 0
    d.decide("为", _runs("为"))                        # a single 为: only the network can say
    assert d.network_calls == 1


def test_skipping_does_not_change_a_reading():
    """The skip is exact: the same readings as asking the network for every polyphone."""
    fast = Disambiguator()
    for text in SENTENCES:
        runs = _runs(text)
        got = fast.decide(text, runs)
        full = {}
        net = fast.net
        positions = [i for i, c in enumerate(text) if net.is_polyphonic(c)]
        for pos, (reading, _p) in zip(positions, net.predict(text, positions)):
            run = runs[0]
            full[pos] = run.syl[pos] if run.in_phrase[pos] and run.syl[pos] in net.readings(text[pos]) else reading
        from services.frontend.engine.rules import context_readings
        full.update(context_readings(text, lambda p: runs[0].in_phrase[p]))
        assert got == full, text
