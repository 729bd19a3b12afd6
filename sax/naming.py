"""Cell and model ids: ``/sax/<cell>`` and ``/sax/<cell>/<model>``.

Names match ``^[a-z][a-z0-9_-]*$`` in full (``re.fullmatch`` with ASCII semantics, so a trailing
newline is rejected, unlike a Python ``$``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sax.errors import invalid

NAME_PATTERN = r"[a-z][a-z0-9_-]*"
_NAME = re.compile(NAME_PATTERN, re.ASCII)
_MODEL_PATH = re.compile(r"[a-zA-Z][a-zA-Z0-9_.-]*", re.ASCII)
_CHECKPOINT = re.compile(r"[A-Za-z0-9_/.\-%:=|+]+", re.ASCII)


def is_valid_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None


@dataclass(frozen=True, order=True)
class CellId:
    cell: str

    def __str__(self) -> str:
        return f"/sax/{self.cell}"

    @classmethod
    def parse(cls, text: str) -> CellId:
        parts = text.split("/")
        if len(parts) != 3 or parts[0] != "" or parts[1] != "sax":
            raise invalid(f"cell full name {text!r} should have the form /sax/<cell name>")
        if not is_valid_name(parts[2]):
            raise invalid(f"cell name {parts[2]!r} must match {NAME_PATTERN!r}")
        return cls(parts[2])


@dataclass(frozen=True, order=True)
class ModelId:
    cell: str
    name: str

    def __str__(self) -> str:
        return f"/sax/{self.cell}/{self.name}"

    @property
    def cell_id(self) -> CellId:
        return CellId(self.cell)

    @classmethod
    def parse(cls, text: str) -> ModelId:
        head, sep, name = text.rpartition("/")
        if not sep:
            raise invalid(
                f"model full name {text!r} should have the form /sax/<cell name>/<model name>"
            )
        if not is_valid_name(name):
            raise invalid(f"model name {name!r} in {text!r} must match {NAME_PATTERN!r}")
        try:
            cell = CellId.parse(head)
        except Exception as exc:
            raise invalid(
                f"model full name {text!r} should have the form /sax/<cell name>/<model name>"
            ) from exc
        return cls(cell.cell, name)

    @classmethod
    def parse_in_cell(cls, text: str, cell: CellId) -> ModelId:
        """Parses and requires the model to live in `cell` (the admin serves one cell)."""
        model = cls.parse(text)
        if model.cell != cell.cell:
            raise invalid(f"model {text} must be within SAX cell {str(cell)!r}")
        return model


def parse_cell_or_model(text: str) -> CellId | ModelId:
    """``/sax/c`` -> CellId, ``/sax/c/m`` -> ModelId; anything else is INVALID_ARGUMENT."""
    try:
        return CellId.parse(text)
    except Exception:
        return ModelId.parse(text)


def validate_model_path(path: str) -> None:
    if _MODEL_PATH.fullmatch(path) is None:
        raise invalid(
            f"model_path {path!r} must start with a letter and hold only letters, digits, '_', '.', '-'"
        )


def validate_checkpoint_path(path: str) -> None:
    if _CHECKPOINT.fullmatch(path) is None:
        raise invalid(
            f"checkpoint_path {path!r} must be non-empty and hold only letters, digits and _/.-%:=|+"
            " (use None for random weights)"
        )
