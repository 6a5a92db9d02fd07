"""FreeSWITCH mod_xml_curl front end: ``POST /v1/freeswitch/dialplan?switch_id=<id>``.

mod_xml_curl posts every dialplan lookup as a form of a hundred or more channel fields
(``hostname``, ``section``, then every ``Caller-*``, ``variable_*`` and ``Hunt-*``
header, names and values URL-encoded). Only the fields ``daemon.freeswitch_dialplan``
reads are decoded; the rest of the body is scanned once, never unquoted. A ``GET``
(binding ``method=GET``: the fields in the query string) is answered the same way.

The answer is HTTP 200 with an XML document (``daemon.freeswitch_dialplan``):
mod_xml_curl treats any other status as "no answer" and falls back to the static
dialplan, so a denial, a malformed request, a draining daemon and a failing authorizer
are all 200 denials (``BAD_REQUEST`` / ``SERVICE_UNAVAILABLE``): FreeSWITCH fails closed.
Only a body over ``MAX_BODY_BYTES`` is refused (413, connection closed).

``XmlCurlEndpoint`` is a plain ASGI app (no ``Request`` object, no middleware of its
own); ``xml_curl_routes`` wraps it in a Starlette ``Route``.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Callable, Sequence
from urllib.parse import unquote_plus

import structlog
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from daemon.authorization import AuthorizationDecision, AuthorizationRequest, Authorizer, Reason
from daemon.freeswitch_dialplan import (
    DEFAULT_AUTHORIZED_CONTEXT,
    DEFAULT_CONTEXTS,
    DIALPLAN_FIELDS,
    MAX_FIELD_LENGTH,
    NOT_FOUND_DOCUMENT,
    BadDialplanRequest,
    decision_document,
    denied_document,
    dialplan_request,
    hunt_context,
    is_authorization_lookup,
)

log = structlog.get_logger(__name__)

DIALPLAN_PATH = "/v1/freeswitch/dialplan"
MAX_BODY_BYTES = 1024 * 1024  # mod_xml_curl's own limit on an answer (XML_CURL_MAX_BYTES)
SWITCH_ID = "switch_id"
_WANTED = frozenset(name.encode("ascii") for name in DIALPLAN_FIELDS)
_QUERY_WANTED = _WANTED | {SWITCH_ID.encode("ascii")}
# the pattern of a switch id in the settings ([[switches]] id)
_SWITCH_ID_PATTERN = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_FIELD_LENGTH - 1}}}")
_XML_TYPE = b"text/xml; charset=utf-8"


def _trie_regex(names: Sequence[bytes]) -> bytes:
    """An alternation of ``names`` factored by common prefixes (``Caller-(?:ANI|Context)``):
    the regex engine then tries one branch per character instead of every name."""
    if b"" in names and len(names) == 1:
        return b""
    branches: dict[bytes, list[bytes]] = {}
    for name in names:
        branches.setdefault(name[:1], []).append(name[1:])
    alternatives = [
        b"" if head == b"" else re.escape(head) + _trie_regex(tails)
        for head, tails in sorted(branches.items(), reverse=True)  # b"" (name ends) last
    ]
    return alternatives[0] if len(alternatives) == 1 else b"(?:" + b"|".join(alternatives) + b")"


@functools.lru_cache(maxsize=16)
def _fields_pattern(wanted: frozenset[bytes]) -> re.Pattern[bytes]:
    return re.compile(rb"&(" + _trie_regex(sorted(wanted)) + rb")=([^&]*)")


def form_fields(encoded: bytes, wanted: frozenset[bytes]) -> dict[str, str]:
    """The ``wanted`` fields of a URL-encoded form (first occurrence wins), decoded.

    Names are matched undecoded (FreeSWITCH's field names need no escaping) by one regex
    scan in C; only the values of wanted fields are unquoted, so a post of hundreds of
    fields costs a fraction of a ``parse_qsl`` of it.
    """
    found: dict[str, str] = {}
    for name, value in _fields_pattern(wanted).findall(b"&" + encoded):
        key = name.decode("ascii")
        if key not in found:
            text = value.decode("latin-1")
            if b"%" in value or b"+" in value:
                text = unquote_plus(text, errors="replace")
            found[key] = text
    return found


class _TooLarge(Exception):
    """The posted body exceeds ``MAX_BODY_BYTES``."""


class _Disconnected(Exception):
    """The client went away before its body was read."""


async def _read_body(scope: Scope, receive: Receive) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > MAX_BODY_BYTES:
            raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send_xml(send: Send, document: str, status: int = 200, *, close: bool = False) -> None:
    body = document.encode()
    headers = [(b"content-type", _XML_TYPE), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class XmlCurlEndpoint:
    """The ASGI app answering mod_xml_curl dialplan lookups with one ``Authorizer``."""

    def __init__(
        self,
        authorizer: Authorizer,
        *,
        default_switch_id: str,
        contexts: Sequence[str] = DEFAULT_CONTEXTS,
        authorized_context: str = DEFAULT_AUTHORIZED_CONTEXT,
        accepting: Callable[[], bool] = lambda: True,
        authorize_timeout: float = 4.0,
    ) -> None:
        self._authorizer = authorizer
        self._default_switch_id = default_switch_id
        self._contexts = tuple(contexts)
        self._authorized_context = authorized_context
        self._accepting = accepting
        self._timeout = authorize_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read the lookup (query string, then form body) and send the XML answer."""
        query = form_fields(scope.get("query_string", b""), _QUERY_WANTED)
        fields = query
        if scope["method"] == "POST":
            try:
                fields = {**query, **form_fields(await _read_body(scope, receive), _WANTED)}
            except _Disconnected:
                return
            except _TooLarge:
                log.warning("xml_curl body too large", limit=MAX_BODY_BYTES)
                # the unread rest of the body makes the connection unusable: close it
                await _send_xml(send, NOT_FOUND_DOCUMENT, 413, close=True)
                return
        await _send_xml(send, await self.answer(fields, query.get(SWITCH_ID, "")))

    async def answer(self, fields: dict[str, str], switch_id: str = "") -> str:
        """The XML document answering a lookup's ``fields`` (``switch_id``: "" = default)."""
        if not is_authorization_lookup(fields, self._contexts):
            return NOT_FOUND_DOCUMENT
        context = hunt_context(fields)
        if not self._accepting():
            return denied_document(Reason.SERVICE_UNAVAILABLE, context=context)
        switch_id = switch_id or self._default_switch_id
        parsed = (
            dialplan_request(fields, switch_id)
            if _SWITCH_ID_PATTERN.fullmatch(switch_id)
            else BadDialplanRequest(SWITCH_ID, "not a switch id")
        )
        if isinstance(parsed, BadDialplanRequest):
            log.warning("xml_curl bad request", field=parsed.field, error=parsed.message)
            return denied_document(Reason.BAD_REQUEST, context=context, detail=parsed.field)
        decision = await self._decide(parsed)
        return decision_document(
            decision, parsed, context=context, authorized_context=self._authorized_context
        )

    async def _decide(self, request: AuthorizationRequest) -> AuthorizationDecision:
        tokens = structlog.contextvars.bind_contextvars(call_id=request.call_id)
        try:
            async with asyncio.timeout(self._timeout):
                return await self._authorizer.authorize(request)
        except Exception:  # the boundary: fail closed
            log.error(
                "authorizer failed",
                call_id=request.call_id,
                account=request.account,
                exc_info=True,
            )
            return AuthorizationDecision.deny(Reason.SERVICE_UNAVAILABLE)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)


def xml_curl_routes(
    authorizer: Authorizer,
    *,
    default_switch_id: str,
    contexts: Sequence[str] = DEFAULT_CONTEXTS,
    authorized_context: str = DEFAULT_AUTHORIZED_CONTEXT,
    accepting: Callable[[], bool] = lambda: True,
    authorize_timeout: float = 4.0,
) -> list[BaseRoute]:
    """The Starlette routes answering mod_xml_curl dialplan lookups with ``authorizer``.

    ``contexts``: the dialplan contexts ratekeeper answers (any other: "not found");
    ``authorized_context``: where an allowed call without LCR routes is transferred;
    ``accepting``: False while the daemon drains (every lookup: SERVICE_UNAVAILABLE);
    ``authorize_timeout``: seconds before a slow authorizer counts as unavailable (keep
    it under the binding's ``timeout``).
    """
    endpoint = XmlCurlEndpoint(
        authorizer,
        default_switch_id=default_switch_id,
        contexts=contexts,
        authorized_context=authorized_context,
        accepting=accepting,
        authorize_timeout=authorize_timeout,
    )
    return [Route(DIALPLAN_PATH, endpoint, methods=["GET", "POST"])]
