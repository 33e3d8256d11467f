from prometheus_client import Counter, Histogram

EMBED_SECONDS = Histogram("tts_speaker_embed_seconds", "Embed RPC latency", ["cache"],
                          buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5))
CACHE = Counter("tts_speaker_cache_total", "Embedding cache lookups", ["result"])
