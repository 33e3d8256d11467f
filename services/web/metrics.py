"""The web process's Prometheus metrics (``tts_web_`` prefix), served on ``TTS_WEB_METRICS_PORT`` (0 = off)."""
from __future__ import annotations

from prometheus_client import Counter

# a caller that hangs up while its request is being served (an interrupted voice agent closes its HTTP request
# mid-body): an ordinary event, counted per route (the route's pattern, e.g. /v1/audio/speech)
CLIENT_DISCONNECTS = Counter("tts_web_client_disconnects_total",
                             "requests whose caller went away before the response was complete", ["route"])
