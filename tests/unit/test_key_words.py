"""``keys.printable_word``: the fast check of key parts against the per-character rule."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from balance.keys import printable_word


def _per_character(value: str) -> bool:
    return not any(ch.isspace() or not ch.isprintable() for ch in value)


def test_given_every_code_point_when_checked_alone_then_the_per_character_rule_agrees() -> None:
    for point in range(0x110000):
        ch = chr(point)
        assert printable_word(ch) == _per_character(ch), hex(point)


@given(st.text(max_size=40))
def test_given_any_text_when_checked_then_the_per_character_rule_agrees(value: str) -> None:
    assert printable_word(value) == _per_character(value)


def test_given_ids_when_checked_then_spaces_and_controls_are_refused() -> None:
    assert printable_word("acme-42:call_7")
    assert not printable_word("acme 42")
    assert not printable_word("acme\t42")
    assert not printable_word("acme\u00a042")  # a no-break space
    assert not printable_word("acme\x00")
