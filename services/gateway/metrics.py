from prometheus_client import Counter, Gauge, Histogram

FIRST_CHUNK = Histogram("tts_gateway_first_chunk_seconds", "First text piece to first audio chunk", ["engine"],
                        buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10))
RTF = Histogram("tts_gateway_real_time_factor", "Processing time / audio time per utterance", ["engine"],
                buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 5))
SYNTHESES = Counter("tts_gateway_syntheses_total", "Utterances by outcome", ["rpc", "outcome"])
IN_PROGRESS = Gauge("tts_gateway_syntheses_in_progress",
                    "Streaming calls being served (each leaves after its outcome is counted)", ["rpc"])
PROMPT_RESENDS = Counter("tts_gateway_prompt_resends_total",
                         "Registered-voice streams resent with the reference audio (the decoder lacked the prompt)")
AUTH_FAILURES = Counter("tts_gateway_auth_failures_total",
                        "Calls refused: 'invalid' (no or a wrong token), 'throttled' (too many failures before: by "
                        "client address or token prefix)", ["outcome", "by"])
