"""Python client for the tts.v1 API: the one place that knows the protocol (used by ttsctl and the tests)."""
from .client import StreamResult, TTSClient
from .speech import Audio, Done, Interrupted, Rejected, SpeechStream, Timing

__all__ = ["TTSClient", "StreamResult", "SpeechStream", "Audio", "Interrupted", "Rejected", "Done", "Timing"]
