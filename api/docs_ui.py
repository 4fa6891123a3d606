"""``/docs``: Swagger UI served from this server's own files, never from a CDN, and only if asked.

FastAPI's default ``/docs`` and ``/redoc`` pages load their scripts from cdn.jsdelivr.net (and
fonts and a favicon from other hosts): whoever opens them on the API's origin runs whatever
those hosts serve that day. The app turns both pages off. With ``CORRAL_API_DOCS=true`` and
the ``swagger-ui-bundle`` package installed (``pip install swagger-ui-bundle``), :func:`install`
serves Swagger UI from that package's pinned files under ``/docs/assets``; without the package
``/docs`` stays off and the server logs why. ``/openapi.json`` is served either way.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

log = logging.getLogger("corral.api")
DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"
ASSET_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")


def bundled_assets() -> Path | None:
    """The folder of Swagger UI's files in the ``swagger-ui-bundle`` package, if installed."""
    try:
        from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-not-found]
    except ImportError:
        return None
    return Path(str(swagger_ui_path))


def install(app: FastAPI, assets: Path | None) -> bool:
    """Serve Swagger UI at ``/docs`` from ``assets``; False (and a warning) when they are
    missing, and then nothing is served."""
    missing = [name for name in ASSET_FILES if assets is None or not (assets / name).is_file()]
    if assets is None or missing:
        log.warning("CORRAL_API_DOCS is on but Swagger UI's files are not installed (%s): "
                    "/docs stays off; pip install swagger-ui-bundle", ", ".join(missing))
        return False
    app.mount(ASSETS_PATH, StaticFiles(directory=assets), name="docs-assets")

    @app.get(DOCS_PATH, include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} API",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None})  # no badge from validator.swagger.io

    return True
