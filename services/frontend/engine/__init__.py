"""Text frontend engine (no gRPC): normalization, segmentation, G2P and Kokoro phonemes for zh/en text."""
from .core import FrontendEngine, TextStream
from .pinyin import is_valid_syllable, pinyin_syllable_to_kokoro
from .types import Segment, Word

__all__ = ["FrontendEngine", "TextStream", "Segment", "Word", "pinyin_syllable_to_kokoro", "is_valid_syllable"]
