"""schemathesis fuzzes both apps of a real cell from the committed ``openapi/*.json``.

Every operation gets schema-valid and schema-violating requests (boundary values, wrong types,
unknown fields, non-finite numbers); every answer must be a non-5xx that conforms to the spec:
a documented status, content type and body, and a 4xx for every request the spec forbids. Data
routes are called on the loaded Echo model, so requests reach the servable, not only the
lookup; the methods Echo does not serve (``lm.gradient``, ``vm.*``) must then be a 400.
Long polls are capped so that the run is bounded by requests, not waits.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis import Case
from schemathesis.checks import not_a_server_error

from sax.models.test import Echo
from sax.openapi_gen import OPENAPI_DIR
from tests.api.conftest import ECHO_NAME, EchoCell

CONFIG = {
    "seed": 8,
    "generation": {"mode": "all", "max-examples": 20, "with-security-parameters": False},
    "phases": {"stateful": {"enabled": False}},
    "checks": {
        # A schema-valid request may still be refused for what the spec cannot say (a model id
        # of another cell, an unregistered model path, an ACL on a method the model lacks).
        "positive_data_acceptance": {"enabled": False},
        # This cell runs on loopback with auth off; whether a bearer token is needed depends on
        # the cell's and the model's ACLs, which the security tests cover.
        "ignored_auth": {"enabled": False},
        "missing_required_header": {"enabled": False},
    },
}
ADMIN = schemathesis.openapi.from_path(
    OPENAPI_DIR / "admin.json", config=schemathesis.Config.from_dict(CONFIG)
)
MODEL = schemathesis.openapi.from_path(
    OPENAPI_DIR / "model.json", config=schemathesis.Config.from_dict(CONFIG)
)
POLL_CAP_S = 0.05
DEADLINE_FLOOR_S = 60.0


def capped(value: Any) -> Any:
    """A long-poll wait of at most `POLL_CAP_S`; values the spec forbids stay as they are."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > POLL_CAP_S:
        return POLL_CAP_S
    return value


@ADMIN.parametrize()
def test_admin_api_conforms_and_never_fails(case: Case, echo_cell: EchoCell) -> None:
    if case.operation.path == "/v1/models/{name}/locations":
        case.query = {
            **(case.query or {}),
            "timeout_s": capped((case.query or {}).get("timeout_s", 1)),
        }
    if case.operation.path == "/v1/models/{name}:wait" and isinstance(case.body, dict):
        case.body = {**case.body, "timeout_s": capped(case.body.get("timeout_s", 1))}
    case.call_and_validate(base_url=echo_cell.admin_url, timeout=30)


NOT_SERVED = frozenset({"lm.gradient", "vm.classify", "vm.embed", "vm.generate", "vm.detect"})


def aim(case: Case, name: str, methods: frozenset[str]) -> None:
    """Points `case` at the model `name`: the data routes of `methods` and every OpenAI body's
    ``model``; other routes keep the generated name (and answer 404). A valid deadline is
    raised to `DEADLINE_FLOOR_S`: a request whose own deadline passes is a 504 by design."""
    if case.path_parameters and case.operation.path.rsplit("/", 1)[-1] in methods:
        case.path_parameters = {**case.path_parameters, "name": name}
    if isinstance(case.body, dict):
        if isinstance(case.body.get("model"), str):
            case.body = {**case.body, "model": name}
        deadline = case.body.get("timeout_s")
        if isinstance(deadline, int | float) and not isinstance(deadline, bool) and deadline > 0:
            case.body = {**case.body, "timeout_s": max(deadline, DEADLINE_FLOOR_S)}


@MODEL.parametrize()
def test_model_api_conforms_and_never_fails(case: Case, echo_cell: EchoCell) -> None:
    aim(case, ECHO_NAME, Echo.methods | NOT_SERVED)
    # A readiness probe says 503 while a model loads (Tiny may): documented, and its purpose.
    probe = case.operation.path == "/readyz"
    case.call_and_validate(
        base_url=echo_cell.model_url,
        timeout=30,
        excluded_checks=[not_a_server_error] if probe else None,
    )
