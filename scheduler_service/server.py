"""Run the scheduler under uvicorn.

``serve(Settings(...))`` serves in this process until interrupted (``clipsched serve``);
``serve_in_thread(settings)`` runs one on a free loopback port in a background thread for
as long as a ``with`` block lasts (a trainer's embedded scheduler, tests, scripts).
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from scheduler_service.api.app import create_app
from scheduler_service.config import Settings

logger = logging.getLogger(__name__)

_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def _fastest(module: str, fallback: str) -> str:
    """``module`` if it is installed (uvloop / httptools), else uvicorn's pure-Python one."""
    return module if importlib.util.find_spec(module) is not None else fallback


GC_THRESHOLDS = (10_000, 10, 10)
"""Collector thresholds of a serving process (CPython's default is ``(700, 10, 10)``)."""


def _tune_gc() -> None:
    """Keep the cyclic garbage collector off the ingestion path of a serving process.

    A batch of 256 outcomes allocates ~10,000 short-lived containers (parsed JSON,
    models, rows). At the default thresholds that is ~14 young collections a batch, and
    the objects of a batch in flight that survive them build up until a full collection
    walks every object the process holds: ~120,000 after start-up with a 10,000-clip run,
    60-100 ms each, about once every 10 batches. Freezing what exists after start-up
    (modules, schemas, the app) removes it from every later collection, and a young
    generation of 10,000 objects collects ~14x less often. Measured with batches of 256
    outcomes at 10,000 clips (``bench/bench_service.py``): time in the collector per 80
    batches from ~780 ms to ~100 ms. Reference counting still frees everything acyclic
    at once; only cycles wait longer.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


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
    app = create_app(settings)
    _tune_gc()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        workers=1,
        loop=_fastest("uvloop", "asyncio"),
        http=_fastest("httptools", "h11"),
        log_level=settings.log_level.lower(),
        access_log=False,
    )


@contextmanager
def serve_in_thread(
    settings: Settings, port: int = 0, start_timeout: float = 30.0
) -> Iterator[str]:
    """Serve the scheduler on loopback in a daemon thread; yield its base URL.

    The socket is bound here (``port`` 0: a free one) and handed to uvicorn, so no other
    process can take the port between choosing and binding it; ``settings.host`` and
    ``settings.port`` are not used. The server shuts down (lifespan included) when the
    block ends.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart on the same port
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), log_level="warning", access_log=False)
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"scheduler-{port}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + start_timeout
    try:
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the scheduler did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20.0)
        sock.close()
