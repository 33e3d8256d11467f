from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class WebSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TTS_WEB_", extra="ignore")

    port: int = 8080
    gateway_addr: str = "127.0.0.1:50051"
    # used for requests that carry no "Authorization: Bearer" header (the header, when present, is passed through)
    token: SecretStr = SecretStr("")
    results_dir: str = "outputs/web"             # synthesized results kept for download, newest max_results
    max_results: int = 200
    max_upload_mb: int = 16                      # reference audio (the gateway's own limit is 10 MB) and batch JSONL
    gateway_timeout_s: float = 300.0
