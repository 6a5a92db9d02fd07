"""Longest-prefix matching of dialled numbers, generic over the value stored per prefix.

One dict maps every prefix to its value; a match probes the prefix lengths present in
the index, longest first (at most one dict probe per distinct length). With a million
prefixes this loads in about a second and matches in about a microsecond
(``python bench/bench_rating.py``).

Numbers are normalised before matching: one leading ``+`` is stripped (``00`` is NOT
stripped: ``0044...`` and ``44...`` are different numbers); a number holding anything
but ASCII digits after that matches nothing. Prefixes are non-empty ASCII digit strings.

Errors::

    ValueError
    └── PrefixIndexError        code BAD_PREFIX
        ├── InvalidPrefixError  code BAD_PREFIX        (empty, '+', non-digit)
        └── DuplicatePrefixError code DUPLICATE_PREFIX
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

V = TypeVar("V")

_MISSING = object()


class PrefixIndexError(ValueError):
    """Base of the prefix index errors; ``code`` is stable, ``prefix`` names the culprit."""

    code = "BAD_PREFIX"

    def __init__(self, message: str, prefix: str) -> None:
        super().__init__(message)
        self.prefix = prefix


class InvalidPrefixError(PrefixIndexError):
    """A prefix that is not a non-empty string of ASCII digits."""

    code = "BAD_PREFIX"


class DuplicatePrefixError(PrefixIndexError):
    """The same prefix given twice."""

    code = "DUPLICATE_PREFIX"


def is_valid_prefix(prefix: str) -> bool:
    """True when ``prefix`` is a non-empty string of ASCII digits (no '+', no spaces)."""
    return isinstance(prefix, str) and prefix.isascii() and prefix.isdigit()


def normalize_number(number: str) -> str | None:
    """The digits a number is matched on, or None when it cannot match anything."""
    if number[:1] == "+":
        number = number[1:]
    if number.isascii() and number.isdigit():
        return number
    return None


class PrefixIndex(Generic[V]):
    """An immutable map from digit prefixes to values with longest-prefix lookup."""

    __slots__ = ("_by_prefix", "_lengths")

    def __init__(self, items: Iterable[tuple[str, V]] = ()) -> None:
        by_prefix: dict[str, V] = {}
        for prefix, value in items:
            if not is_valid_prefix(prefix):
                raise InvalidPrefixError(
                    f"invalid prefix {prefix!r}: must be ASCII digits only", str(prefix)
                )
            if prefix in by_prefix:
                raise DuplicatePrefixError(f"duplicate prefix {prefix!r}", prefix)
            by_prefix[prefix] = value
        self._by_prefix = by_prefix
        self._lengths: tuple[int, ...] = tuple(
            sorted({len(prefix) for prefix in by_prefix}, reverse=True)
        )

    def longest_match(self, number: str) -> V | None:
        """The value of the longest prefix of ``number``, or None when none matches."""
        digits = normalize_number(number)
        if digits is None:
            return None
        by_prefix = self._by_prefix
        size = len(digits)
        missing = _MISSING
        for length in self._lengths:
            if length <= size:
                found = by_prefix.get(digits[:length], missing)
                if found is not missing:
                    return found  # type: ignore[return-value]
        return None

    def matches(self, number: str) -> Iterator[V]:
        """The values of every prefix of ``number``, longest first."""
        digits = normalize_number(number)
        if digits is None:
            return
        by_prefix, size = self._by_prefix, len(digits)
        missing = _MISSING
        for length in self._lengths:
            if length <= size:
                found = by_prefix.get(digits[:length], missing)
                if found is not missing:
                    yield found  # type: ignore[misc]

    def get(self, prefix: str) -> V | None:
        """The value stored for exactly ``prefix`` (no longest-prefix search)."""
        return self._by_prefix.get(prefix)

    def __len__(self) -> int:
        return len(self._by_prefix)

    def __contains__(self, prefix: object) -> bool:
        return prefix in self._by_prefix

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_prefix)
