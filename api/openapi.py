"""Print the API's OpenAPI schema: ``python -m api.openapi > docs/openapi.json``.

The schema does not depend on settings or on a database: the app is built over an in-memory
SQLite URL that is never connected to.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from api.app import create_app
from api.settings import Settings


def openapi_schema() -> dict[str, Any]:
    app = create_app(Settings(database_url="sqlite://"))
    return app.openapi()


def render(schema: dict[str, Any]) -> str:
    """The schema as checked in: sorted keys, indent 2, a final newline."""
    return json.dumps(schema, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    sys.stdout.write(render(openapi_schema()))


if __name__ == "__main__":
    main()
