"""The operator's endpoints: ``GET /metrics`` (Prometheus text) and ``GET /health``.

``ops_router(daemon)`` is a FastAPI router for the management API app to include; it
reads the daemon given (anything with what ``daemon.health.HealthSubject`` names):

- ``/metrics``: ``generate_latest(daemon.metrics.registry)`` as ``CONTENT_TYPE_LATEST``;
  the scrape-time gauges are read on the event loop (``daemon.metrics``);
- ``/health``: ``daemon.health.health`` as JSON, HTTP 200 when ok or degraded, 503 when
  down.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from daemon.health import DEFAULT_TIMEOUT, HealthSubject, health, http_status

METRICS_PATH = "/metrics"
HEALTH_PATH = "/health"


def ops_router(daemon: HealthSubject, *, health_timeout: float = DEFAULT_TIMEOUT) -> APIRouter:
    """``GET /metrics`` and ``GET /health`` of ``daemon`` (each probe within ``health_timeout``)."""
    router = APIRouter(tags=["operations"])

    @router.get(METRICS_PATH, response_class=Response, include_in_schema=False)
    async def metrics() -> Response:
        body = generate_latest(daemon.metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @router.get(HEALTH_PATH, response_class=JSONResponse, include_in_schema=False)
    async def health_of_components() -> JSONResponse:
        report = await health(daemon, timeout=health_timeout)
        return JSONResponse(report, status_code=http_status(report))

    return router
