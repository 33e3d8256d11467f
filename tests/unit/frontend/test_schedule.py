"""The segment schedule: a short first segment, growing later ones, sized by the decoder's speed, never a token cut."""
import random
import re

import pytest

from services.frontend.engine.segmenter import FIRST_UNITS, SLACK_UNITS, Schedule
from services.frontend.engine.textutil import units

REPLIES = [
    "请于14：30前到店办理手续，逾期将自动取消预约，如需改期请提前一天联系我们。",
    "好的，您的订单已经在2026年1月13日发出，预计三天内送达，快递单号是SF1234567890，请注意查收。",
    "今天北京晴，气温-3℃到5℃，空气质量良好，适合外出但是早晚温差较大请注意保暖并且多喝热水。",
    "这款手机的价格是¥3999，支持5G网络和快速充电，现在下单还可以享受十二期免息和50%的运费减免。",
    "您的会员积分还有12,345分，可以在App里兑换iPhone 15的优惠券，有效期到2026-03-31为止。",
    "The meeting has been moved to 3:30 PM on Friday and Dr. Smith will join remotely from the Boston office.",
]
# numbers (with their joiners), times, dates, codes, units, money, English words: a cut never falls inside one
TOKEN = re.compile(r"[-¥$]?\d+(?:[：:，,．./-]\d+)*(?:[%℃])?|[A-Za-z]+(?:\d+)?")


def pieces(text: str, seed: int):
    rnd = random.Random(seed)
    i, out = 0, []
    while i < len(text):
        k = rnd.randint(1, 3)                # an LLM's pace: 1-3 characters at a time
        out.append(text[i:i + k])
        i += k
    return out


def stream(engine, text, seed=0, rtf=0.3):
    s = engine.stream(decoder_rtf=rtf)
    segs, pushed_at_first = [], None
    sent = 0
    for p in pieces(text, seed):
        sent += len(p)
        out = s.push(p)
        if out and pushed_at_first is None:
            pushed_at_first = sent
        segs.extend(out)
    segs.extend(s.flush())
    return segs, pushed_at_first


def at_once(engine, text, rtf):
    """The whole text pushed at once into a stream (not a whole-text request: its segments follow the rate)."""
    s = engine.stream(decoder_rtf=rtf)
    return s.push(text) + s.flush()


@pytest.mark.parametrize("rtf", [0.1, 0.3, 1.0, 3.0])
@pytest.mark.parametrize("text", REPLIES)
def test_never_splits_a_number_time_code_unit_or_word(engine, text, rtf):
    inside = {p for m in TOKEN.finditer(text) for p in range(m.start() + 1, m.end())}
    for seed in range(3):
        segs, _ = stream(engine, text, seed, rtf)
        assert "".join(s.text for s in segs).replace(" ", "") == text.replace(" ", "")
        cuts = {s.span[1] for s in segs[:-1]} | {s.span[0] for s in segs[1:]}
        assert not cuts & inside, [s.text for s in segs]


def test_a_time_is_never_cut_at_its_colon(engine):
    for rtf in (0.05, 0.3, 2.0):
        segs, _ = stream(engine, "请于14：30前到店", rtf=rtf)
        assert any("14：30" in s.text for s in segs), [s.text for s in segs]
        assert any("十四点三十" in s.normalized or "十四点半" in s.normalized for s in segs)


@pytest.mark.parametrize("text", REPLIES[:4])
def test_first_segment_is_short_and_comes_early(engine, text):
    whole_first_sentence = re.split(r"(?<=[。！？])", text)[0]
    segs, pushed = stream(engine, text)
    first = segs[0]
    longest_token = max((units(m.group()) for m in TOKEN.finditer(first.text)), default=0)
    # a handful of syllables: the schedule's first size plus the slack to a clause end (a token is never cut)
    assert units(first.text) <= FIRST_UNITS + SLACK_UNITS + longest_token, first.text
    assert len(first.text) < len(whole_first_sentence) / 2
    # it is emitted while the rest of the sentence is still arriving, not at its end
    assert pushed <= len(first.text) + 2 * SLACK_UNITS + 3


def test_later_segments_grow(engine):
    text = ("我们这边已经为您登记了退货申请接下来会有快递员在明天上午上门取件请您把商品和配件放回原来的包装盒里"
            "快递员取件以后我们会在收到商品的三个工作日之内完成检查检查通过以后退款会原路返回到您的支付账户")
    segs, _ = stream(engine, text, rtf=0.3)
    sizes = [units(s.text) for s in segs]
    assert len(sizes) >= 4, sizes
    assert all(b > a for a, b in zip(sizes[:3], sizes[1:4])), sizes       # first, then larger, then larger
    assert sizes[0] <= FIRST_UNITS + SLACK_UNITS


def test_sizes_follow_the_decoders_speed(engine):
    text = ("我们这边已经为您登记了退货申请接下来会有快递员在明天上午上门取件请您把商品和配件放回原来的包装盒里"
            "快递员取件以后我们会在收到商品的三个工作日之内完成检查")
    fast = at_once(engine, text, 0.1)
    slow = at_once(engine, text, 2.0)
    # a slow (loaded) decoder gets more, smaller segments after the first; a fast one fewer, longer ones
    assert len(slow) > len(fast)
    assert units(fast[1].text) > units(slow[1].text)


@pytest.mark.parametrize("text", REPLIES + ["我们这边已经为您登记了退货申请接下来会有快递员在明天上午上门取件请您把商品和配件放回原来的包装盒里"])
def test_a_whole_text_is_cut_the_same_whatever_the_decoders_load(engine, text):
    """Unary and batch requests (whole_text): the same text gives the same segments, so the same audio, however
    fast the decoder is at the moment; only streamed text adapts to it."""
    cuts = {rtf: [s.text for s in engine.analyze(text, decoder_rtf=rtf)] for rtf in (0.0, 0.05, 0.3, 1.0, 3.0)}
    whole = engine.stream(decoder_rtf=3.0, whole_text=True)
    cuts["stream whole_text"] = [s.text for s in whole.push(text) + whole.flush()]
    assert len({tuple(c) for c in cuts.values()}) == 1, cuts
    assert cuts[0.0] == [s.text for s in at_once(engine, text, 0.0)]       # the default schedule


def test_the_load_changes_how_a_streamed_text_is_cut(engine):
    """The counterpart: streamed the same text is cut by the decoder's speed (the test above is not vacuous)."""
    text = REPLIES[0] + REPLIES[2]
    assert len({tuple(s.text for s in at_once(engine, text, rtf)) for rtf in (0.05, 0.3, 3.0)}) > 1


def test_schedule_limit_is_the_playback_budget():
    s = Schedule(rtf=0.5, max_units=60)
    assert s.limit(0, 0.0) == FIRST_UNITS
    # segment k may hold what can be synthesized in LOOKAHEAD_SHARE of the playing time of the one before it
    small, big = s.limit(1, 2.0), s.limit(1, 6.0)
    assert big > small and s.limit(5, 1000.0) == 60
    assert Schedule(rtf=0.0).rtf == Schedule().rtf            # unknown → the default, never a division by zero
    assert Schedule(rtf=float("nan")).limit(1, 3.0) > 0


def test_streamed_equals_whole_text_with_a_rate(engine):
    for text in REPLIES:
        whole = at_once(engine, text, 0.7)
        for seed in range(3):
            segs, _ = stream(engine, text, seed, rtf=0.7)
            assert [s.text for s in segs] == [s.text for s in whole]


@pytest.mark.parametrize("rtf", [0.7, 1.2, 2.0, 3.0])
def test_a_size_cut_in_the_word_after_a_number_moves_past_that_word(engine, rtf):
    # the schedule's size is reached inside 小时 (after "24", where no cut may fall): the cut goes after 小时
    text = "非常抱歉给您带来不便。您反馈的商品质量问题我已经记录下来了，售后专员会在24小时之内联系您，为您安排免费更换。"
    bad = text.index("小时") + 1
    for segs in [at_once(engine, text, rtf)] + [stream(engine, text, seed, rtf)[0] for seed in range(3)]:
        assert bad not in {s.span[1] for s in segs[:-1]}, [s.text for s in segs]
