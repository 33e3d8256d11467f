"""Kokoro v1.0 phoneme vocabulary (characters the model knows; anything else is silently dropped by it)."""
KOKORO_VOCAB = frozenset(
    ';:,.!?—…"()“” ̃ʣʥʦʨᵝꭧAIOQSTWYᵊabcdefhijklmnopqrstuvwxyzɑɐɒæβɔɕçɖðʤəɚɛɜɟɡɥɨɪʝɯɰŋɳɲɴøɸθœɹɾɻʁɽʂʃʈʧʊʋʌɣχʎʒʔɤˈˌːʰʲ↓→↗↘ᵻ'
)


def only_vocab(ps: str) -> str:
    return "".join(c for c in ps if c in KOKORO_VOCAB)
