"""Input rules for published models (the original's ValidateModelProto, reference section 4).

Checked in the original's order, each failure an INVALID_ARGUMENT that names the field. On top
of the original, the placement keys of ``overrides`` are type-checked here so that a typo is a
400 at publish time, not a model that silently never places.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sax.auth.acl import validate_acl_name
from sax.errors import invalid
from sax.naming import CellId, ModelId, validate_checkpoint_path, validate_model_path
from sax.schemas import METHODS, PublishedModel


def validate_overrides(overrides: Mapping[str, Any]) -> None:
    for key, value in overrides.items():
        if not isinstance(key, str) or not key:
            raise invalid(f"overrides key {key!r} must be a non-empty string", "overrides")
        if key == "ram" or (key.startswith("ram") and key[3:].isdigit()):
            ok = (isinstance(value, int) and not isinstance(value, bool) and value >= 0) or (
                isinstance(value, str) and value.strip().isdigit()
            )
            if not ok:
                raise invalid(
                    f"overrides[{key!r}] must be a non-negative byte count, got {value!r}",
                    f"overrides.{key}",
                )
        elif key == "constraints":
            ok = isinstance(value, str) or (
                isinstance(value, list) and all(isinstance(v, str) for v in value)
            )
            if not ok:
                raise invalid(
                    "overrides['constraints'] must be a list of tags or a comma-separated string",
                    "overrides.constraints",
                )
        elif key in ("chip", "topology") and not isinstance(value, str):
            raise invalid(f"overrides[{key!r}] must be a string, got {value!r}", f"overrides.{key}")


def validate_model(model: PublishedModel, cell: CellId) -> ModelId:
    """Raises INVALID_ARGUMENT naming the first bad field; returns the parsed model id."""
    model_id = ModelId.parse_in_cell(model.model_id, cell)
    validate_model_path(model.model_path)
    validate_checkpoint_path(model.checkpoint_path)
    if model.num_replicas < 0:
        raise invalid(f"num_replicas must be >= 0, got {model.num_replicas}", "num_replicas")
    validate_acl_name(model.admin_acl, "admin_acl")
    for method, acl in model.acls.items():
        if method not in METHODS:
            raise invalid(
                f"acls: unknown method {method!r}; methods are {', '.join(METHODS)}", "acls"
            )
        validate_acl_name(acl, f"acls[{method!r}]")
    validate_overrides(model.overrides)
    return model_id
