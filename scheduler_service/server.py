"""Run the scheduler under uvicorn: ``serve(Settings(...))`` (used by ``clipsched serve``)."""

from __future__ import annotations

import importlib.util
import logging

import uvicorn

from scheduler_service.api.app import create_app
from scheduler_service.config import Settings

logger = logging.getLogger(__name__)

_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def _fastest(module: str, fallback: str) -> str:
    """``module`` if it is installed (uvloop / httptools), else uvicorn's pure-Python one."""
    return module if importlib.util.find_spec(module) is not None else fallback


def serve(settings: Settings) -> None:
    """Serve the scheduler in this process (one worker) until interrupted."""
    if not logging.getLogger().handlers:  # not configured by a caller (e.g. the CLI)
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("scheduler_service").setLevel(settings.log_level)
    if not settings.auth_enabled:
        if settings.host in _LOOPBACK:
            logger.info(
                "no tokens configured: listening on loopback only; set "
                "CLIPSCHED_WRITE_TOKEN (and CLIPSCHED_READ_TOKEN) before binding elsewhere"
            )
        else:
            logger.warning(
                "no tokens configured and listening on %s: anyone who can reach it can change "
                "runs; set CLIPSCHED_WRITE_TOKEN",
                settings.host,
            )
    logger.info("clip scheduler on http://%s:%d (docs at /docs)", settings.host, settings.port)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        workers=1,
        loop=_fastest("uvloop", "asyncio"),
        http=_fastest("httptools", "h11"),
        log_level=settings.log_level.lower(),
        access_log=False,
    )
