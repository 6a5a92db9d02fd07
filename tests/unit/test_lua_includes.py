"""``--@include`` in the Lua scripts: one script's body as a local function of another."""

from __future__ import annotations

import pytest

from balance.scripts import expand_includes, load_script


def test_given_an_include_when_expanded_then_the_body_is_a_local_function() -> None:
    sources = {"outer": "--@include inner\nreturn inner(KEYS, ARGV)\n", "inner": "return 1\n"}

    expanded = expand_includes("outer", sources.__getitem__)

    assert expanded == (
        "local function inner(KEYS, ARGV)\nreturn 1\nend\nreturn inner(KEYS, ARGV)\n"
    )


def test_given_nested_includes_when_expanded_then_each_level_is_expanded() -> None:
    sources = {
        "a": "--@include b\nreturn b(KEYS, ARGV)\n",
        "b": "--@include c\nreturn c(KEYS, ARGV)\n",
        "c": "return 'c'\n",
    }

    expanded = expand_includes("a", sources.__getitem__)

    assert "local function b(KEYS, ARGV)\nlocal function c(KEYS, ARGV)\nreturn 'c'\nend" in expanded
    assert "--@include" not in expanded


def test_given_an_include_cycle_when_expanded_then_the_chain_is_named() -> None:
    sources = {"a": "--@include b\n", "b": "--@include a\n"}

    with pytest.raises(ValueError, match=r"'a' includes itself: a -> b -> a"):
        expand_includes("a", sources.__getitem__)


def test_given_an_include_naming_no_script_when_expanded_then_script_and_line_are_named() -> None:
    sources = {"a": "local x = 1\n--@include ../etc/passwd\n"}

    with pytest.raises(ValueError, match=r"'a' line 2: bad include"):
        expand_includes("a", sources.__getitem__)


def test_given_the_packaged_reserve_capped_when_loaded_then_it_carries_all_three_bodies() -> None:
    combined = load_script("reserve_capped")

    for part in ("caps", "caps_release", "reserve"):
        body = load_script(part).source.rstrip()
        assert f"local function {part}(KEYS, ARGV)\n{body}\nend\n" in combined.source
    assert combined.sha != load_script("reserve").sha
