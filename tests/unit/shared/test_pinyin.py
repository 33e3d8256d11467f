"""Pinyin syllables with tone digits (shared.pinyin): validation and the initial/final split every engine uses."""
import pytest

from shared.pinyin import ERHUA, is_valid_syllable, parse


@pytest.mark.parametrize("syl,ok", [("xie3", True), ("lv4", True), ("zhong1", True), ("xie6", False), ("xie", False),
                                    ("abc3", False), ("", False), ("3", False), ("bing5", True), ("fo2", True),
                                    ("xo1", False), ("zhi1", True), ("xian7", False), (ERHUA, False)])
def test_valid_syllable(syl, ok):
    assert is_valid_syllable(syl) is ok


@pytest.mark.parametrize("syl,expected", [
    ("zhong1", ("zh", "ong", 1)), ("lv4", ("l", "ü", 4)), ("ju2", ("j", "ü", 2)), ("you3", ("", "iou", 3)),
    ("gui4", ("g", "uei", 4)), ("lun2", ("l", "uen", 2)), ("er2", ("", "er", 2)), ("hng5", ("", "hng", 5)),
])
def test_parse(syl, expected):
    assert parse(syl) == expected


def test_erhua_is_no_syllable():
    with pytest.raises(ValueError):
        parse(ERHUA)
