"""A transformers tokenizer over tiktoken BPE ranks, in the format of the published ``vq32k-phoneme-tokenizer``.

The published GLM-TTS tokenizer directory holds ``tokenizer.model`` (one ``<base64 bytes> <rank>`` line per BPE
token), ``tokenizer_config.json`` whose ``auto_map`` names a tokenizer class defined in a ``.py`` file of the same
directory (custom code: transformers runs it only with ``trust_remote_code=True``), and the special, speech and
phoneme tokens as added tokens after the BPE ranks. This module is OUR tokenizer of that format: the tiny test
checkpoints copy it into their tokenizer directory (``checkpoint.write_tiktoken_tokenizer``), so the engine's load
path for the published tokenizer (remote code, tiktoken, trust setting) is exercised without the published file.

It is self-contained on purpose (no project imports): transformers imports it from the checkpoint directory.
"""
from __future__ import annotations

import base64
import os

import tiktoken
from transformers import PreTrainedTokenizer

# the GLM-4 pre-tokenization split (contractions, letters, 1-3 digits, punctuation runs, newlines, spaces)
PAT_STR = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
           r"\s*[\r\n]+|\s+(?!\S)|\s+")


def read_ranks(path: str) -> dict[bytes, int]:
    ranks = {}
    with open(path, "rb") as f:
        for line in f:
            line = line.strip()
            if line:
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    return ranks


class TiktokenGLMTokenizer(PreTrainedTokenizer):
    vocab_files_names = {"vocab_file": "tokenizer.model"}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab_file, clean_up_tokenization_spaces=False, **kwargs):
        self.vocab_file = vocab_file
        self.ranks = read_ranks(vocab_file)
        self.encoding = tiktoken.Encoding(name=os.path.basename(os.path.dirname(os.path.abspath(vocab_file))),
                                          pat_str=PAT_STR, mergeable_ranks=self.ranks, special_tokens={})
        # a BPE token's string form: its bytes read as latin-1 (one char per byte, reversible)
        self.token_to_id = {t.decode("latin-1"): i for t, i in self.ranks.items()}
        self.id_to_token = {i: t for t, i in self.token_to_id.items()}
        super().__init__(clean_up_tokenization_spaces=clean_up_tokenization_spaces, **kwargs)

    @property
    def vocab_size(self) -> int:
        return len(self.ranks)

    def get_vocab(self):
        vocab = dict(self.token_to_id)
        vocab.update(self.added_tokens_encoder)
        return vocab

    def _tokenize(self, text, **kwargs):
        return [self.id_to_token[i] for i in self.encoding.encode(text, disallowed_special=())]

    def _convert_token_to_id(self, token):
        return self.token_to_id[token]

    def _convert_id_to_token(self, index):
        return self.id_to_token[index]

    def convert_tokens_to_string(self, tokens):
        return b"".join(t.encode("latin-1") for t in tokens).decode("utf-8", errors="replace")

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        # like the published tokenizer: no prefix or suffix tokens
        return token_ids_0 + (token_ids_1 or [])

    def save_vocabulary(self, save_directory, filename_prefix=None):
        path = os.path.join(save_directory, (filename_prefix or "") + "tokenizer.model")
        if os.path.abspath(path) != os.path.abspath(self.vocab_file):
            with open(path, "wb") as f:
                for token, rank in sorted(self.ranks.items(), key=lambda kv: kv[1]):
                    f.write(base64.b64encode(token) + b" " + str(rank).encode() + b"\n")
        return (path,)
