"""``_plain_query``: the switches' usual query string read at C speed, and every other one
left to the field-by-field path (which names a bad field)."""

from __future__ import annotations

import pytest

from daemon.http_authorize import _plain_query, _query_params, _text_value


def test_given_a_plain_query_when_read_then_known_fields_last_one_wins() -> None:
    query = b"account=a1&callee=123&call_id=c-1&junk=x&call_id=c-2&&caller="
    assert _plain_query(query) == {"account": "a1", "callee": "123", "call_id": "c-2", "caller": ""}


@pytest.mark.parametrize(
    "query",
    [b"", b"call_id=a%20b", b"caller=John+Doe", b"call_id=a\x01b", b"call_id=a\x7fb",
     b"call_id=" + b"x" * 257],
    ids=["empty", "escape", "plus", "control", "delete", "too-long"],
)  # fmt: skip
def test_given_anything_else_when_read_then_left_to_the_field_by_field_path(query: bytes) -> None:
    assert _plain_query(query) is None


@pytest.mark.parametrize("query", [b"account=a&callee=1&call_id=x", b"call_id=" + b"x" * 256])
def test_given_a_plain_query_when_read_both_ways_then_the_same_fields(query: bytes) -> None:
    slow = {k: _text_value(k, v) for k, v in _query_params(query).items()}
    assert _plain_query(query) == slow
