#!/usr/bin/env bash
# `make run`: redis-server + the four services on loopback, in the background; PIDs and logs in .run/.
# Gateway on localhost:${TTS_GATEWAY_PORT:-50051}. `make stop` stops them.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=.run
mkdir -p "$RUN"
PY=.venv/bin/python
# two Redis roles (eviction is per instance): the embedding cache may evict anything (allkeys-lfu); the durable
# store (voices, batch jobs, quota counters, the replace dictionary) never evicts (noeviction: a full store fails
# the writer, per-tenant quotas keep any one tenant from filling it)
REDIS_PORT=${TTS_REDIS_PORT:-6379}
STORE_PORT=${TTS_REDIS_STORE_PORT:-6380}
export TTS_GATEWAY_PORT=${TTS_GATEWAY_PORT:-50051}
export TTS_FRONTEND_PORT=${TTS_FRONTEND_PORT:-50052}
export TTS_SPEAKER_PORT=${TTS_SPEAKER_PORT:-50053}
export TTS_DECODER_PORT=${TTS_DECODER_PORT:-50054}
export TTS_SPEAKER_REDIS_URL=${TTS_SPEAKER_REDIS_URL:-redis://127.0.0.1:$REDIS_PORT/0}
export TTS_GATEWAY_REDIS_URL=${TTS_GATEWAY_REDIS_URL:-redis://127.0.0.1:$STORE_PORT/0}
export TTS_FRONTEND_REDIS_URL=${TTS_FRONTEND_REDIS_URL:-redis://127.0.0.1:$STORE_PORT/0}
export TTS_GATEWAY_FRONTEND_ADDR=127.0.0.1:$TTS_FRONTEND_PORT
export TTS_GATEWAY_SPEAKER_ADDR=127.0.0.1:$TTS_SPEAKER_PORT
export TTS_GATEWAY_DECODER_ADDRS=${TTS_GATEWAY_DECODER_ADDRS:-127.0.0.1:$TTS_DECODER_PORT}
export TTS_WEB_PORT=${TTS_WEB_PORT:-8080}
export TTS_WEB_GATEWAY_ADDR=${TTS_WEB_GATEWAY_ADDR:-127.0.0.1:$TTS_GATEWAY_PORT}

alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  echo "redis cache: already answering on port $REDIS_PORT, using it"
else
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --maxmemory "${TTS_REDIS_MAXMEMORY:-256mb}" --maxmemory-policy allkeys-lfu \
    --daemonize yes --pidfile "$PWD/$RUN/redis.pid" --logfile "$PWD/$RUN/redis.log"
  echo "redis cache: started on port $REDIS_PORT (maxmemory ${TTS_REDIS_MAXMEMORY:-256mb}, allkeys-lfu)"
fi
if redis-cli -p "$STORE_PORT" ping >/dev/null 2>&1; then
  echo "redis store: already answering on port $STORE_PORT, using it"
else
  redis-server --port "$STORE_PORT" --bind 127.0.0.1 --save 60 1 --appendonly yes --dir "$PWD/$RUN" \
    --maxmemory "${TTS_REDIS_STORE_MAXMEMORY:-512mb}" --maxmemory-policy noeviction \
    --daemonize yes --pidfile "$PWD/$RUN/redis-store.pid" --logfile "$PWD/$RUN/redis-store.log"
  echo "redis store: started on port $STORE_PORT (maxmemory ${TTS_REDIS_STORE_MAXMEMORY:-512mb}, noeviction, persisted)"
fi

for svc in frontend speaker decoder gateway web; do
  if alive "$svc"; then echo "$svc: already running (pid $(cat "$RUN/$svc.pid"))"; continue; fi
  nohup "$PY" -m "services.$svc" >"$RUN/$svc.log" 2>&1 &
  echo $! >"$RUN/$svc.pid"
  echo "$svc: started (pid $!, log $RUN/$svc.log)"
done

# wait (bounded) until every stage reports SERVING
"$PY" - <<PY
import sys, time, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
ports = {"frontend": $TTS_FRONTEND_PORT, "speaker": $TTS_SPEAKER_PORT, "decoder": $TTS_DECODER_PORT, "gateway": $TTS_GATEWAY_PORT}
deadline = time.time() + float("${TTS_RUN_WAIT_S:-180}")
for name, port in ports.items():
    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    while True:
        try:
            if stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status == health_pb2.HealthCheckResponse.SERVING:
                print(f"{name}: SERVING on 127.0.0.1:{port}")
                break
        except grpc.RpcError:
            pass
        if time.time() > deadline:
            sys.exit(f"{name} did not become SERVING; see .run/{name}.log")
        time.sleep(0.25)
PY
# the web process answers once its port is open
for _ in $(seq 1 120); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$TTS_WEB_PORT") 2>/dev/null; then break; fi
  alive web || { echo "web did not start; see $RUN/web.log"; exit 1; }
  sleep 0.25
done
echo "web: WebUI and HTTP API on http://127.0.0.1:$TTS_WEB_PORT/  (POST /v1/audio/speech)"
echo "ready: try  .venv/bin/ttsctl synth \"今天是2026年1月13日，气温-3℃。\" --out a.wav"
