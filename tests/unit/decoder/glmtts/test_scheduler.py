"""The glmtts scheduler alone: pure bookkeeping driven pass by pass against a fake LM (no model, no thread), the
way vLLM tests its v1 scheduler. The prompt layout is the engine's (GLMTTSLayout) with made-up token ids."""
from __future__ import annotations

import threading

import torch

from services.decoder.engine.glmtts.lm import SamplingParams
from services.decoder.engine.glmtts.prompt import GLMTTSLayout, Prompt
from services.decoder.engine.glmtts.scheduler import Scheduler, Segment, StreamState
from shared.errors import InvalidArgument

BOA, ATS, VOCAB = 3, 1000, 64


class FakeCache:
    def __init__(self, max_tokens):
        self.max_tokens = max_tokens
        self.length = 0
        self.freed = False

    @property
    def nbytes(self):
        return 10 * self.length

    def crop(self, n):
        self.length = min(self.length, n)

    def free(self):
        self.freed = True
        self.length = 0


class FakeLM:
    """Records every forward; the logits' argmax is the context length, so sampled tokens are predictable. Never
    ends a segment by itself unless ``end_after`` tokens were sampled (and the scheduler allows the end)."""

    def __init__(self, end_after=None):
        self.calls: list[list[tuple[FakeCache, list[int]]]] = []
        self.full_calls: list[list[int]] = []
        self.caches: list[FakeCache] = []
        self.end_after = end_after

    def new_cache(self, max_tokens):
        c = FakeCache(max_tokens)
        self.caches.append(c)
        return c

    def packed_forward(self, items):
        self.calls.append([(kv, list(ids)) for kv, ids in items])
        rows = []
        for kv, ids in items:
            kv.length += len(ids)
            rows.append(torch.nn.functional.one_hot(torch.tensor(kv.length % VOCAB), VOCAB).float())
        return torch.stack(rows)

    def full_forward(self, ids):
        self.full_calls.append(list(ids))
        return torch.nn.functional.one_hot(torch.tensor(len(ids) % VOCAB), VOCAB).float()

    def sample(self, logits, history, params, generator, allow_end):
        if allow_end and self.end_after is not None and len(history) >= self.end_after:
            return -1
        return int(logits.argmax())


class Sink:
    def __init__(self, consume=True):
        self.scheduler = None
        self.consume = consume
        self.chunks, self.ended, self.failed = [], [], []

    def chunk(self, st, seg_index, tokens, final, max_len):
        self.chunks.append((st.id, seg_index, len(tokens), final))
        if self.consume:
            self.scheduler.consumed(st)

    def end(self, st):
        self.ended.append(st.id)

    def fail(self, st, exc):
        self.failed.append((st.id, exc))


PROMPT = Prompt(text_ids=[10, 11], speech_tokens=[7, 8, 9], feat=None, embedding=torch.zeros(1, 192))
LAYOUT = GLMTTSLayout(BOA, ATS, min_ratio=2.0, max_ratio=4.0)


def make(lm=None, sink=None, **kw):
    lm = lm or FakeLM()
    sched = Scheduler(lm, LAYOUT, **kw)
    sink = sink or Sink()
    sink.scheduler = sched
    return sched, lm, sink


def stream(sched, sink, sid, prompt=PROMPT, schedule=(4, 8), max_ahead=4, use_cache=True, texts=()):
    st = StreamState(sid, list(schedule), SamplingParams(), sid, use_cache, sink, max_ahead, prompt=prompt)
    sched.add(st)
    for i, t in enumerate(texts):
        sched.feed(st, Segment(index=i, text_ids=list(t)))
    return st


def run_until_idle(sched, limit=1000):
    for _ in range(limit):
        if not sched.step():
            return
    raise AssertionError("scheduler never went idle")


def test_prefill_uses_the_engines_layout_then_one_token_per_pass():
    sched, lm, sink = make()
    st = stream(sched, sink, 1, texts=[[20, 21, 22]])
    sched.step()
    (kv, ids), = lm.calls[0]
    # [prompt text, this text, begin-of-audio, prompt speech]
    assert ids == [10, 11, 20, 21, 22, BOA, ATS + 7, ATS + 8, ATS + 9]
    run_until_idle(sched)
    seg = st.history[0]
    assert len(seg.tokens) == 12                          # 3 text ids x max ratio 4; the fake LM never ends
    fed = [c[0][1] for c in lm.calls[1:]]
    assert fed == [[ATS + t] for t in seg.tokens[:-1]]    # each sampled token is fed back alone
    assert seg.tokens[0] == len(ids) % VOCAB              # the first token came from the prefill's logits
    # chunk boundaries of schedule [4, 8]: 4, 12 (final)
    assert [(c[2], c[3]) for c in sink.chunks] == [(4, False), (12, True)]


def test_a_stream_without_its_prompt_waits_and_joins_the_batch_when_it_arrives():
    sched, lm, sink = make()
    a = stream(sched, sink, 1, texts=[[20, 21, 22]])
    b = stream(sched, sink, 2, prompt=None, texts=[[30]])
    sched.step()
    assert [kv for kv, _ in lm.calls[0]] == [a.kv] and b.kv is None
    sched.set_prompt(b, PROMPT)
    sched.step()
    call = lm.calls[1]
    assert [kv for kv, _ in call] == [a.kv, b.kv]         # one packed forward: a's token step + b's prefill
    assert len(call[0][1]) == 1 and call[1][1] == [10, 11, 30, BOA, ATS + 7, ATS + 8, ATS + 9]


def test_a_reader_that_does_not_read_takes_its_stream_out_of_the_batch():
    sched, lm, sink = make(sink=Sink(consume=False))
    st = stream(sched, sink, 1, max_ahead=1, schedule=(2,), texts=[[20, 21, 22]])
    while sched.step():
        pass
    assert len(sink.chunks) == 1 and st.ahead == 1 and not st.runnable()
    n = len(lm.calls)
    assert sched.step() == 0 and len(lm.calls) == n        # nothing decoded while the reader is behind
    sched.consumed(st)
    assert sched.step() == 1


def test_the_prefill_budget_defers_a_second_new_stream_to_the_next_pass():
    sched, lm, sink = make(max_prefill_tokens=5)
    a = stream(sched, sink, 1, texts=[[20, 21, 22]])
    b = stream(sched, sink, 2, texts=[[30, 31]])
    sched.step()
    assert [kv for kv, _ in lm.calls[0]] == [a.kv] and b.current is None and b.pending
    sched.step()
    assert [kv for kv, _ in lm.calls[1]] == [a.kv, b.kv]


def test_segment_two_feeds_only_what_the_cache_does_not_hold():
    sched, lm, sink = make()
    st = stream(sched, sink, 1, texts=[[20, 21]])
    run_until_idle(sched)
    first = st.history[0]
    held = list(st.cached_ids)
    sched.feed(st, Segment(index=1, text_ids=[40]))
    sched.step()
    (kv, ids), = lm.calls[-1]
    full = LAYOUT.segment_input(PROMPT, [first], [40])
    keep = next(i for i, (x, y) in enumerate(zip(held + [None], full)) if x != y)
    assert keep == len(PROMPT.text_ids) + len(first.text_ids)      # prompt text + segment 1 text are reused
    assert ids == full[keep:] and st.reused_tokens == keep


def test_without_cache_the_whole_sequence_goes_through_the_full_forward():
    sched, lm, sink = make()
    st = stream(sched, sink, 1, use_cache=False, texts=[[20]])
    run_until_idle(sched)
    assert lm.calls == [] and st.kv is None
    assert len(lm.full_calls) == len(st.history[0].tokens)
    assert lm.full_calls[-1][:5] == [10, 11, 20, BOA, ATS + 7]


def test_a_segment_over_the_stream_limit_fails_that_stream_alone():
    sched, lm, sink = make(max_tokens_per_stream=12)
    bad = stream(sched, sink, 1, texts=[[20] * 8])                 # 14 ids of context + 16 tokens > 12
    good = stream(sched, sink, 2, texts=[[30]])
    run_until_idle(sched)
    assert [sid for sid, _ in sink.failed] == [1] and isinstance(sink.failed[0][1], InvalidArgument)
    assert good.history and not bad.history


def test_end_of_audio_ends_the_segment_after_min_len():
    sched, lm, sink = make(lm=FakeLM(end_after=0))
    st = stream(sched, sink, 1, texts=[[20, 21]])
    sched.end(st)
    run_until_idle(sched)
    assert len(st.history[0].tokens) == 4                          # min ratio 2 x 2 text ids, then the LM ended
    assert sink.ended == [1]


def test_removing_a_stream_frees_its_cache():
    sched, lm, sink = make()
    st = stream(sched, sink, 1, texts=[[20, 21]])
    sched.step()
    kv = st.kv
    sched.remove(st)
    assert kv.freed and st.kv is None and sched.step() == 0 and sched.active() == 0


def test_a_dead_scheduler_thread_reports_itself():
    died = threading.Event()
    seen = []

    def on_dead(name, exc):
        seen.append((name, exc))
        died.set()

    sched, lm, sink = make(on_dead=on_dead)

    def broken():
        raise RuntimeError("injected")

    sched._next_batch = broken
    sched.start()
    assert died.wait(10)
    assert seen[0][0] == "scheduler" and str(seen[0][1]) == "injected"
    assert not sched.alive()
    sched.stop()


def test_the_layout_drops_history_oldest_first_within_the_speech_budget():
    layout = GLMTTSLayout(BOA, ATS, max_history_tokens=10)
    h = [Segment(0, [1], tokens=[1] * 4), Segment(1, [2], tokens=[2] * 4)]
    ids = layout.segment_input(Prompt([9], [5, 5], None, torch.zeros(1, 192)), h, [3])
    assert [s.index for s in h] == [1]                              # 2 + 4 + 4 + estimate > 10: segment 0 dropped
    assert ids == [9, 2, 3, BOA, ATS + 5, ATS + 5] + [ATS + 2] * 4
    assert layout.length_bounds([1, 2]) == (4, 40)                  # 2..20 speech tokens per text id


def test_a_stream_removed_during_its_pass_is_counted_until_that_pass_frees_its_cache():
    class RemovingLM(FakeLM):        # the reader closes the stream while its second pass is running
        def packed_forward(self, items):
            out = super().packed_forward(items)
            if len(self.calls) == 2:
                sched.remove(st)
                seen.append((kv.freed, sched.active(), sched.cache_bytes()))
            return out

    seen = []
    sched, lm, sink = make(RemovingLM())
    st = stream(sched, sink, 1, texts=[[20, 21]])
    sched.step()                                  # prefill
    kv = st.kv
    sched.step()
    assert seen == [(False, 1, kv_bytes := seen[0][2])] and kv_bytes > 0    # mid-pass: held and counted
    assert kv.freed and st.kv is None and sched.active() == 0 and sched.cache_bytes() == 0


def test_a_model_with_sample_batch_samples_every_row_of_a_pass_in_one_call():
    class BatchLM(FakeLM):
        def __init__(self):
            super().__init__()
            self.batches = []

        def sample(self, *a, **k):
            raise AssertionError("sampled row by row")

        def sample_batch(self, logits, histories, params, generators, allow_end):
            self.batches.append(logits.shape[0])
            return [int(row.argmax()) for row in logits]

    runs = {}
    for name, lm in (("row by row", FakeLM()), ("batched", BatchLM())):
        sched, lm, sink = make(lm)
        states = [stream(sched, sink, i, texts=[[20, 21, 22][: i + 1]]) for i in range(3)]
        for st in states:
            sched.end(st)
        run_until_idle(sched)
        runs[name] = ([st.history[0].tokens for st in states], list(sink.chunks))
    assert runs["batched"] == runs["row by row"]
    assert lm.batches[0] == 3 and len(lm.batches) == sched.steps
