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
    # before a caller's token is checked (with the gateway), at most this much of a body or WebSocket frame is read
    preauth_kb: int = 64
    max_json_kb: int = 1024                      # JSON bodies and the WebSocket start message (reference audio: binary)
    # Host header: comma-separated names (any port), "*" = any. Origin (browsers): same origin as Host, or listed here
    allowed_hosts: str = "localhost,127.0.0.1,[::1]"
    allowed_origins: str = ""
    ws_send_timeout_s: float = 15.0              # a WebSocket reader this slow is dropped (its synthesis cancelled)
    # a WebSocket without an Authorization header is "pre-auth" until its start message is read (and, if big, its
    # token checked): at most preauth_connections of them at once (preauth_per_client per client address), each
    # buffering at most max_json_kb, so at most preauth_connections × max_json_kb in all; over → 429 + Retry-After.
    # A start message not complete within ws_start_timeout_s drops the connection (a stalled partial frame)
    preauth_connections: int = 32
    preauth_per_client: int = 4
    ws_start_timeout_s: float = 10.0
    ws_heartbeat_s: float = 30.0                 # WebSocket pings; no pong in half of it closes the socket
