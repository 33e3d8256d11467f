"""ECAPA-TDNN through speechbrain's real loader, on a small checkpoint written in speechbrain's layout."""
import asyncio
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from scripts.make_tiny_ecapa import write_checkpoint
from services.speaker.engine import SpeakerEngine
from services.speaker.engine.cache import EmbeddingCache
from services.speaker.engine.ecapa import EcapaEncoder

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(scope="module")
def ecapa(tmp_path_factory):
    enc = EcapaEncoder(str(write_checkpoint(tmp_path_factory.mktemp("ecapa"), dim=96)))
    enc.load()
    return enc


def test_loads_offline_from_a_local_speechbrain_directory(ecapa):
    assert ecapa.dim == 96 and ecapa.version.startswith("ecapa-")


def test_embeddings_are_deterministic_and_input_dependent(ecapa):
    a, _ = sf.read(DATA / "BAC009S0764W0121.wav", dtype="float32")
    b, _ = sf.read(DATA / "BAC009S0764W0122.wav", dtype="float32")
    ea1, ea2, eb = ecapa.embed(a).numpy(), ecapa.embed(a).numpy(), ecapa.embed(b).numpy()
    assert ea1.shape == (96,) and np.isfinite(ea1).all()
    assert np.allclose(ea1, ea2) and not np.allclose(ea1, eb)


def test_cache_key_names_the_encoder_and_its_weights(ecapa):
    engine = SpeakerEngine(ecapa, EmbeddingCache(None))
    result = asyncio.run(engine.embed((DATA / "BAC009S0764W0121.wav").read_bytes()))
    assert result.encoder == "ecapa" and len(result.embedding) == 96
    assert engine.key(result.reference_id).startswith(f"tts:spk:v1:ecapa@{ecapa.version}:")


def test_a_directory_without_hyperparams_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="hyperparams.yaml"):
        EcapaEncoder(str(tmp_path))
