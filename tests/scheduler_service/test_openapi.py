"""The OpenAPI document says what the server does: every error status an operation can
answer, and a security scheme only when tokens are configured."""

from __future__ import annotations

from typing import Any

from scheduler_service.api.app import create_app
from scheduler_service.config import Settings

TOKEN = "write-token-0123456789abcdef"


def document(**settings: Any) -> dict[str, Any]:
    app = create_app(Settings(database_url="sqlite:///:memory:", **settings))
    return app.openapi()


def test_every_operation_documents_its_error_answers() -> None:
    paths = document(write_token=TOKEN)["paths"]
    for path, item in paths.items():
        for method, operation in item.items():
            codes = set(operation["responses"])
            if path == "/health":
                continue
            assert {"401", "422", "503"} <= codes or (method == "get" and path == "/runs"), (
                method, path, codes
            )  # fmt: skip
            if method in ("post", "put"):
                assert {"403", "413", "415"} <= codes, (method, path, codes)
            if "{run}" in path:
                assert "404" in codes, (method, path, codes)
    for route in ("targets", "clip-probs", "reward-weights"):
        assert "412" in paths[f"/runs/{{run}}/{route}"]["put"]["responses"]
    assert "409" in paths["/runs/{run}/outcomes"]["post"]["responses"]
    assert "409" in paths["/runs"]["post"]["responses"]


def test_the_security_scheme_is_declared_only_with_tokens() -> None:
    secured, open_ = document(write_token=TOKEN), document()
    assert "securitySchemes" in secured["components"]
    assert "securitySchemes" not in open_.get("components", {})
    for item in open_["paths"].values():
        for operation in item.values():
            assert "security" not in operation and "401" not in operation["responses"]
