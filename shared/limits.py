"""Limits every service agrees on, defined once: the services' settings take their defaults from here, the
validators and the clients check against them. Plain constants (no settings machinery): the client package
imports this module too.

A deployment changes a size limit through the services' settings (``TTS_GATEWAY_MAX_TEXT_CHARS`` …); the ranges
and the language list are part of the API and change here only.
"""
from __future__ import annotations

MIB = 1024 * 1024

# ---- request content ----------------------------------------------------------------------------------------------
MAX_TEXT_CHARS = 20000                   # per request, all text pieces together (gateway and frontend)
LANGUAGES = ("", "auto", "zh", "en")     # SynthesisConfig.language / NormalizeConfig.language ("" = auto)
SPEED_MIN, SPEED_MAX = 0.5, 2.0          # SynthesisConfig.speed (0 = 1.0)
CHUNK_SIZE_MAX = 1000                    # SynthesisConfig.chunk_size (0 = the engine's default)

# ---- reference audio (voice cloning) ------------------------------------------------------------------------------
MAX_REFERENCE_BYTES = 10 * MIB           # the encoded file, as sent to the gateway and on to the speaker
MIN_REFERENCE_SPEECH_S, MAX_REFERENCE_SPEECH_S = 1.0, 30.0   # speech in it, after trimming silence
GOOD_REFERENCE_SPEECH_S = (3.0, 10.0)    # outside: accepted with a warning
# what decoding may produce, before trimming: a compressed file can hold an hour of silence in 500 KB, so the speaker
# decodes in bounded blocks and stops at the first of these (INVALID_ARGUMENT naming the limit)
MAX_REFERENCE_TOTAL_S = 4 * MAX_REFERENCE_SPEECH_S           # seconds of audio, silence included
MAX_REFERENCE_DECODED_BYTES = 64 * MIB   # float32 samples decoded, every channel counted (120 s of 48 kHz stereo: 46 MB)

# ---- streams ------------------------------------------------------------------------------------------------------
STREAM_IDLE_TIMEOUT_S = 60.0             # a stream that sends nothing this long is ended (gateway, decoder)


def speed_ok(speed: float) -> bool:
    return SPEED_MIN <= speed <= SPEED_MAX


def chunk_size_ok(chunk_size: int) -> bool:
    return 0 <= chunk_size <= CHUNK_SIZE_MAX


# ---- gRPC channels ------------------------------------------------------------------------------------------------
KEEPALIVE_TIME_MS = 30_000
CLIENT_MAX_MESSAGE_BYTES = 64 * MIB      # what a public client accepts (the gateway's own limit is smaller)
# a restarted server is used again within a second or two, not after minutes of backoff
RECONNECT_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 100),
                     ("grpc.min_reconnect_backoff_ms", 100),
                     ("grpc.max_reconnect_backoff_ms", 2000)]


# gRPC's own receive limit refuses a message from its length prefix, before reading it, but as RESOURCE_EXHAUSTED
# "Received message larger than max" (without RetryInfo: clients retry it) — a status no interceptor can change. So a
# server's transport limit sits at this hard cap, far above its TTS_<STAGE>_MAX_MESSAGE_MB: a message between the two
# is read (at most this much per call) and refused by the error interceptor as INVALID_ARGUMENT naming the limit.
# Only a message over the cap gets gRPC's own answer (read nothing; tts_client reports it as INVALID_ARGUMENT too).
TRANSPORT_MAX_MESSAGE_BYTES = 64 * MIB


def transport_receive_limit(max_bytes: int) -> int:
    """gRPC's receive limit for a server whose own limit is ``max_bytes`` (the hard cap, or more for a bigger limit)."""
    return max(TRANSPORT_MAX_MESSAGE_BYTES, 2 * max_bytes)


def message_size_options(max_bytes: int) -> list[tuple[str, int]]:
    return [("grpc.max_receive_message_length", max_bytes), ("grpc.max_send_message_length", max_bytes)]


def client_channel_options(max_bytes: int = CLIENT_MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    """A public client's channel to the gateway (tts_client, the web process)."""
    return [*message_size_options(max_bytes), *RECONNECT_OPTIONS]


def stage_channel_options(max_bytes: int) -> list[tuple[str, object]]:
    """The gateway's channels to its stages."""
    return [*message_size_options(max_bytes), ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS), *RECONNECT_OPTIONS,
            # with a dns:/// target naming a headless Service, spread calls over all pods
            ("grpc.lb_policy_name", "round_robin"),
            # a fixed 256 KB stream window instead of BDP growth to ~4 MB: what a stage may send ahead of a slow
            # client stays ~2.7 s of decoder audio per stream, so back-pressure reaches the decoder's queue
            ("grpc.http2.bdp_probe", 0),
            ("grpc.http2.lookahead_bytes", 256 * 1024)]
