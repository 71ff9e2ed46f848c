"""The web side's access log: one line per request, to ``var/log/web-access.log`` and the log.

The query string is left out: signed acknowledge links and console forms carry tokens there.
"""

from __future__ import annotations

import logging
from logging.handlers import WatchedFileHandler
from pathlib import Path

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from ari_app.logs import JsonFormatter, json_wanted

ACCESS = logging.getLogger("ari_app.web.access")


class AccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        remote = request.headers.get("X-Forwarded-For", request.remote or "-").split(",")[0]
        self.logger.info("method=%s path=%s status=%d bytes=%d ms=%.1f remote=%s",
                         request.method, request.path, response.status,
                         response.body_length, time * 1000, remote.strip())


def open_file(var_dir: Path) -> logging.Handler:
    """Also write the access lines to var/log/web-access.log (logrotate-safe: reopened when
    the file is moved)."""
    path = var_dir / "log" / "web-access.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = WatchedFileHandler(path)
    handler.setFormatter(JsonFormatter() if json_wanted() else
                         logging.Formatter("%(asctime)s %(message)s"))
    ACCESS.addHandler(handler)
    return handler


def close_file(handler: logging.Handler) -> None:
    ACCESS.removeHandler(handler)
    handler.close()
