"""Text frontend engine (no gRPC): normalization, segmentation and engine-neutral readings (pinyin with spoken and
citation tones, English pronunciations in ARPAbet, the map back to the request text) for zh/en text."""
from .core import FrontendEngine, TextStream
from .english import Pronunciation
from .types import Segment, SourceStretch, Word

__all__ = ["FrontendEngine", "TextStream", "Segment", "SourceStretch", "Word", "Pronunciation"]
