"""schemathesis fuzzes both apps of a cell with auth on, with and without credentials: every
answer is a documented non-5xx (401 and 403 included), whatever the caller sends."""

from __future__ import annotations

import pytest
import schemathesis
from schemathesis import Case

from sax.models.test import Echo
from sax.openapi_gen import OPENAPI_DIR
from tests.api.test_schemathesis import CONFIG as API_CONFIG
from tests.api.test_schemathesis import aim, capped
from tests.security.conftest import GUARDED, Secured

# The API tests' settings (their checks cover why some are off), fewer examples per operation.
CONFIG = {
    **API_CONFIG,
    "seed": 9,
    "generation": {**API_CONFIG["generation"], "max-examples": 5},
}
ADMIN = schemathesis.openapi.from_path(
    OPENAPI_DIR / "admin.json", config=schemathesis.Config.from_dict(CONFIG)
)
MODEL = schemathesis.openapi.from_path(
    OPENAPI_DIR / "model.json", config=schemathesis.Config.from_dict(CONFIG)
)


def headers(secured: Secured, kind: str) -> dict[str, str]:
    token = secured.token(kind)
    return {"authorization": f"Bearer {token}"} if token else {}


@ADMIN.parametrize()
@pytest.mark.parametrize("kind", ["none", "inside"])
def test_admin_api_never_fails_with_or_without_credentials(
    case: Case, kind: str, secured: Secured
) -> None:
    if case.operation.path == "/v1/models/{name}/locations":
        case.query = {
            **(case.query or {}),
            "timeout_s": capped((case.query or {}).get("timeout_s", 1)),
        }
    if case.operation.path == "/v1/models/{name}:wait" and isinstance(case.body, dict):
        case.body = {**case.body, "timeout_s": capped(case.body.get("timeout_s", 1))}
    case.call_and_validate(
        base_url=f"http://{secured.cell.admin_address}", headers=headers(secured, kind), timeout=30
    )


@MODEL.parametrize()
@pytest.mark.parametrize("kind", ["none", "inside"])
def test_model_api_never_fails_with_or_without_credentials(
    case: Case, kind: str, secured: Secured
) -> None:
    aim(case, GUARDED, Echo.methods)
    case.call_and_validate(
        base_url=f"http://{secured.data_address}", headers=headers(secured, kind), timeout=30
    )
