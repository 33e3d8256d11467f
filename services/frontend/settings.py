from pydantic_settings import SettingsConfigDict

from shared.limits import MAX_TEXT_CHARS
from shared.settings import ServiceSettings


class FrontendSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TTS_FRONTEND_", extra="ignore")

    port: int = 50052
    replace_dict_path: str = "configs/G2P_replace_dict.jsonl"   # the seed of the shared copy when redis_url is set
    # the durable Redis store: the replace dictionary shared by all replicas (edits reach every one); "" = the file
    redis_url: str = ""
    max_segment_chars: int = 60          # Chinese-character equivalents per segment (size-limit split)
    dict_check_interval_s: float = 1.0   # replace dictionary mtime is checked at most this often
    max_text_chars: int = MAX_TEXT_CHARS  # per request, all pieces together
