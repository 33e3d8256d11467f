"""Python client for the tts.v1 API: the one place that knows the protocol (used by ttsctl and the tests)."""
from .client import StreamResult, TTSClient

__all__ = ["TTSClient", "StreamResult"]
