"""What a voice is: a registered voice's id (v_ + 32 hex digits) or a built-in voice's name; ids are checked."""
import pytest

from services.gateway.voices import check_voice_id, is_registered, new_voice_id
from shared.errors import InvalidArgument


def test_a_new_id_is_a_registered_voice():
    assert is_registered(new_voice_id()) and new_voice_id() != new_voice_id()


@pytest.mark.parametrize("name", ["", "default", "zh_female", "V_" + "0" * 32])
def test_other_strings_name_builtin_voices(name):
    assert not is_registered(name)


@pytest.mark.parametrize("bad", ["v_", "v_nope", "v_" + "0" * 31, "v_" + "0" * 33, "v_" + "G" * 32, "v_" + "A" * 32])
def test_a_malformed_id_names_the_field(bad):
    with pytest.raises(InvalidArgument) as exc:
        is_registered(bad, "config.voice")
    assert exc.value.field == "config.voice" and "is not a voice id" in exc.value.message


def test_an_empty_id_is_refused():
    with pytest.raises(InvalidArgument, match="^id: is empty$"):
        check_voice_id("")
