"""The management API: accounts, resellers' customers, top-ups and adjustments over HTTP.

FastAPI on its own listener (``[api]`` host/port, 7081), separate from the switch-facing
authorization listener. ``app.build_api`` wires it; ``auth`` authenticates API keys and
scopes every request; ``openapi`` keeps the checked-in ``docs/openapi.json`` in step.
"""
