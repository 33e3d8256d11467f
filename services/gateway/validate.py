"""Validation of public requests; every error names the field."""
from __future__ import annotations

import re
import unicodedata

from shared.audio import SUPPORTED_OUTPUT_RATES
from shared.encodings import ENCODINGS as OUTPUT_ENCODINGS
from shared.errors import InvalidArgument
from shared.limits import CHUNK_SIZE_MAX, LANGUAGES, SPEED_MAX, SPEED_MIN, chunk_size_ok, speed_ok

from tts.v1 import tts_pb2

# AudioEncoding value → its entry name in shared.encodings (UNSPECIFIED = LINEAR16)
ENCODINGS = {tts_pb2.AUDIO_ENCODING_UNSPECIFIED: "LINEAR16",
             **{tts_pb2.AudioEncoding.Value(name): name for name in OUTPUT_ENCODINGS}}
MAX_SEED = 2**63 - 1


def validate_config(cfg, default_rate: int, max_reference_bytes: int) -> None:
    if cfg.sample_rate and cfg.sample_rate not in SUPPORTED_OUTPUT_RATES:
        raise InvalidArgument("config.sample_rate", f"{cfg.sample_rate} is not supported; use one of "
                              f"{', '.join(map(str, SUPPORTED_OUTPUT_RATES))}")
    if cfg.encoding not in ENCODINGS:
        raise InvalidArgument("config.encoding", f"unknown encoding {cfg.encoding}")
    rate = cfg.sample_rate or default_rate
    name = ENCODINGS[cfg.encoding]
    if rate not in OUTPUT_ENCODINGS[name].rates:
        raise InvalidArgument("config.sample_rate", f"{name} encoding requires sample_rate "
                              f"{' or '.join(map(str, OUTPUT_ENCODINGS[name].rates))}, got {rate}")
    if not chunk_size_ok(cfg.chunk_size):
        raise InvalidArgument("config.chunk_size",
                              f"{cfg.chunk_size} is outside 0..{CHUNK_SIZE_MAX} (0 = server default)")
    if cfg.speed and not speed_ok(cfg.speed):
        raise InvalidArgument("config.speed", f"{cfg.speed:g} is outside {SPEED_MIN}..{SPEED_MAX} (0 = 1.0)")
    if cfg.HasField("seed") and cfg.seed > MAX_SEED:
        raise InvalidArgument("config.seed", f"must be below 2^63, got {cfg.seed}")
    if cfg.language not in LANGUAGES:
        raise InvalidArgument("config.language", f"unknown language {cfg.language!r}; use '', auto, zh or en")
    if cfg.WhichOneof("voice_source") == "reference_audio" and len(cfg.reference_audio) > max_reference_bytes:
        raise InvalidArgument("config.reference_audio", f"{len(cfg.reference_audio)} bytes is over the "
                              f"{max_reference_bytes} byte limit")
    if len(cfg.prompt_text) > 1000:
        raise InvalidArgument("config.prompt_text", "longer than 1000 characters")


def check_model(model: str, known) -> None:
    """``config.model`` against the engines the decoders report in ``Info`` (``known``); "" = the default."""
    if model and model not in known:
        raise InvalidArgument("config.model", f"unknown model {model!r}; use one of: {', '.join(known)}")


_ALLOWED_CONTROLS = {"\n", "\t", "\r"}


def check_text(piece: str, total: int, limit: int, field: str = "text") -> None:
    """Length limit over the whole request, and no control characters (other than tab and newlines)."""
    if total > limit:
        raise InvalidArgument(field, f"the request's text is {total} characters; the limit is {limit}")
    for pos, ch in enumerate(piece):
        if ch not in _ALLOWED_CONTROLS and unicodedata.category(ch) == "Cc":
            raise InvalidArgument(field, f"control character U+{ord(ch):04X} at position {pos}")


def has_speakable(text: str) -> bool:
    return any(unicodedata.category(c)[0] in "LN" for c in text)


# SSML is not interpreted; tags would be read out ("小于speak大于…"), so text that carries them is refused.
SSML_TAG = re.compile(r"</?(?:speak|break|prosody|say-as|phoneme|sub|emphasis|voice|audio|mark|lang|p|s|w)"
                      r"(?:\s[^<>]*)?/?>", re.IGNORECASE)
SSML_TAIL = 200      # characters of earlier pieces kept to find a tag split across pieces


def check_ssml(text: str, offset: int = 0, field: str = "text") -> None:
    """``text`` may end with up to SSML_TAIL characters of the previous pieces; ``offset`` is text[0]'s position."""
    m = SSML_TAG.search(text)
    if m:
        raise InvalidArgument(field, f"SSML is not supported: tag {m.group(0)[:40]!r} at position {offset + m.start()}; "
                                     "send plain text (use phoneme_mode for readings)")
