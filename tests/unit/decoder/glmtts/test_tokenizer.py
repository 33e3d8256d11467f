"""The published tokenizer's format (tiktoken BPE ranks + its own tokenizer class as custom code) loads, and only
when trust_remote_code allows it."""
import pytest

from services.decoder.engine.glmtts.checkpoint import write_tiktoken_tokenizer
from services.decoder.engine.glmtts.lm import SpeechLM
from services.decoder.engine.glmtts.phonemes import all_tokens
from services.decoder.engine.glmtts.text_tokenizer import TokenizerNeedsRemoteCode, custom_code_class


@pytest.fixture(scope="module")
def tiktoken_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "vq32k-phoneme-tokenizer"
    write_tiktoken_tokenizer(out)
    return out


def test_custom_code_needs_trust_remote_code(glmtts_checkpoint, tiktoken_dir):
    assert custom_code_class(tiktoken_dir) == "tokenization_glmtts.TiktokenGLMTokenizer"
    with pytest.raises(TokenizerNeedsRemoteCode, match="TTS_DECODER_GLMTTS_TRUST_REMOTE_CODE=true"):
        SpeechLM.load(glmtts_checkpoint / "llm", tiktoken_dir, trust_remote_code=False)


def test_tiktoken_tokenizer_loads_with_trust(glmtts_checkpoint, tiktoken_dir):
    lm = SpeechLM.load(glmtts_checkpoint / "llm", tiktoken_dir, trust_remote_code=True)
    tok = lm.tokenizer
    assert type(tok).__name__ == "TiktokenGLMTokenizer"
    # BPE merges: each of these characters is one token (3 UTF-8 bytes each); an unmerged one is 3 byte tokens
    assert len(lm.encode_text("你好世界")) == 4
    assert len(lm.encode_text("行")) == 3
    assert lm.ate - lm.ats == 32767 and lm.boa != lm.eoa
    assert lm.has_tokens(all_tokens())
    ids = lm.encode_text("银<|H|><|ANG2|> ok")      # 银 is not merged: 3 byte tokens
    assert tok.decode(ids) == "银<|H|><|ANG2|> ok"
    assert ids[3:5] == lm.encode_text("<|H|><|ANG2|>")
    # no prefix/suffix tokens, as the published tokenizer
    assert tok.encode("你好") == lm.encode_text("你好")
