"""The OpenAPI document of the management API, and its checked-in copy.

``docs/openapi.json`` is generated, never edited by hand; a test fails when it differs
from what the code serves. Refresh it with::

    .venv/bin/python -m daemon.api.openapi docs/openapi.json

(or ``ratekeeper api openapi --output docs/openapi.json``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from daemon.api.app import new_app

CHECKED_IN = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
REFRESH_COMMAND = ".venv/bin/python -m daemon.api.openapi docs/openapi.json"


def openapi_document() -> dict[str, Any]:
    """The document the API serves at ``/openapi.json``."""
    return new_app().openapi()


def render(document: dict[str, Any]) -> str:
    """The document as stable, reviewable JSON text (2-space indent, final newline)."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the document to the path given (or print it)."""
    args = sys.argv[1:] if argv is None else argv
    text = render(openapi_document())
    if args:
        Path(args[0]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
