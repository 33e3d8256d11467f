from prometheus_client import Counter, Gauge, Histogram

ACTIVE_STREAMS = Gauge("tts_decoder_active_streams", "Decode streams open", ["engine"])
CACHE_BYTES = Gauge("tts_decoder_kv_cache_bytes", "Bytes held by per-stream decoding state", ["engine"])
FIRST_CHUNK = Histogram("tts_decoder_first_chunk_seconds", "Decode stream open to first audio chunk", ["engine"],
                        buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10))
CHUNK_SECONDS = Counter("tts_decoder_audio_seconds_total", "Seconds of audio produced", ["engine"])
TOKENS_PER_SECOND = Histogram("tts_decoder_tokens_per_second", "Tokens decoded per second of a Decode stream's life",
                              ["engine"], buckets=(5, 10, 25, 50, 75, 100, 150, 200, 300, 500, 1000))
HEADROOM = Gauge("tts_decoder_realtime_headroom_streams",
                 "More real-time streams this pod would admit now (measured throughput x target utilization - "
                 "streams that need compute); scale out when it nears 0", ["engine"])
THROUGHPUT = Gauge("tts_decoder_throughput_realtime", "Seconds of audio per second of wall time when busy (measured)",
                   ["engine"])
MODEL_SECONDS = Gauge("tts_decoder_model_seconds", "Seconds of model compute so far, by stage of the engine's model "
                      "(fastspeech2: acoustic, vocoder)", ["engine", "stage"])
