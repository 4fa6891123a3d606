"""``/docs``: off by default; with ``api_docs`` on, Swagger UI from the server's own files
(the swagger-ui-bundle package), never from another host; off again when those files are
missing. ``/openapi.json`` is served in every case."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from api import docs_ui
from tests.integration.api_support import sqlite_api

SCRIPT_OR_STYLE_URL = re.compile(r'(?:src|href)="([^"]+)"')


@pytest.fixture
def assets(tmp_path: Path) -> Path:
    """Stand-ins for the package's files: the page only needs their names."""
    folder = tmp_path / "swagger-ui"
    folder.mkdir()
    for name in docs_ui.ASSET_FILES:
        (folder / name).write_text(f"/* {name} */")
    return folder


def test_docs_are_off_by_default(tmp_path: Path) -> None:
    with sqlite_api(tmp_path) as api:
        assert api.client.get("/docs").status_code == 404
        assert api.client.get("/redoc").status_code == 404
        assert api.client.get("/openapi.json").status_code == 200


def test_docs_when_asked_load_only_same_origin_files(tmp_path: Path, assets: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(docs_ui, "bundled_assets", lambda: assets)
    with sqlite_api(tmp_path, api_docs=True) as api:
        page = api.client.get("/docs")
        assert page.status_code == 200
        urls = SCRIPT_OR_STYLE_URL.findall(page.text)
        assert sorted(urls) == ["/docs/assets/favicon-32x32.png",
                                "/docs/assets/swagger-ui-bundle.js",
                                "/docs/assets/swagger-ui.css"]
        assert "http://" not in page.text and "https://" not in page.text
        assert api.client.get(urls[0]).status_code == 200
        assert api.client.get("/redoc").status_code == 404


def test_docs_stay_off_without_swagger_uis_files(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(docs_ui, "bundled_assets", lambda: None)
    with sqlite_api(tmp_path, api_docs=True) as api:
        assert api.client.get("/docs").status_code == 404
        assert api.client.get("/openapi.json").status_code == 200
    assert "pip install swagger-ui-bundle" in caplog.text
