"""Cell and model ids, as the reference's naming tests pin them down."""

from __future__ import annotations

import pytest

from sax.errors import Code, SaxError
from sax.naming import (
    CellId,
    ModelId,
    is_valid_name,
    parse_cell_or_model,
    validate_checkpoint_path,
    validate_model_path,
)


@pytest.mark.parametrize("name", ["foo", "pi_3-14", "a", "x1"])
def test_valid_names(name: str) -> None:
    assert is_valid_name(name)


@pytest.mark.parametrize("name", ["_foo", "42", "foo$", "Foo", "", "foo\n", "foo.bar", "foo bar"])
def test_invalid_names(name: str) -> None:
    assert not is_valid_name(name)


def test_cell_ids() -> None:
    assert CellId.parse("/sax/foo") == CellId("foo")
    assert str(CellId.parse("/sax/pi_3-14")) == "/sax/pi_3-14"
    for bad in ["/Sax/foo", "/sax/foo/", "sax/foo", "/sax/foo/bar", "foo", "", "!@#"]:
        with pytest.raises(SaxError) as err:
            CellId.parse(bad)
        assert err.value.code is Code.INVALID_ARGUMENT


def test_model_ids() -> None:
    m = ModelId.parse("/sax/foo/bar")
    assert (m.cell, m.name, str(m), str(m.cell_id)) == ("foo", "bar", "/sax/foo/bar", "/sax/foo")
    assert ModelId.parse("/sax/pi_3-14/x-1_y").name == "x-1_y"
    for bad in [
        "/Sax/foo/bar",
        "/sax/foo/bar/",
        "sax/foo/bar",
        "/sax/foo/bar/foobar",
        "/sax/bar",
        "foo",
        "",
    ]:
        with pytest.raises(SaxError) as err:
            ModelId.parse(bad)
        assert err.value.code is Code.INVALID_ARGUMENT
        assert repr(bad) in err.value.message or bad == ""


def test_model_must_be_in_cell() -> None:
    assert ModelId.parse_in_cell("/sax/a/m", CellId("a")).name == "m"
    with pytest.raises(SaxError, match="must be within SAX cell '/sax/b'"):
        ModelId.parse_in_cell("/sax/a/m", CellId("b"))


def test_cell_or_model() -> None:
    assert parse_cell_or_model("/sax/foo") == CellId("foo")
    assert parse_cell_or_model("/sax/foo/bar") == ModelId("foo", "bar")
    with pytest.raises(SaxError):
        parse_cell_or_model("foo")


@pytest.mark.parametrize(
    "path", ["sax.models.test.Echo", "saxml.server.torch.vllm.Gemma4B", "a-b_c"]
)
def test_valid_model_paths(path: str) -> None:
    validate_model_path(path)


@pytest.mark.parametrize("path", ["", "google3/foo/bar", " a b c ", "1abc"])
def test_invalid_model_paths(path: str) -> None:
    with pytest.raises(SaxError, match="model_path"):
        validate_model_path(path)


@pytest.mark.parametrize("path", ["None", "gs://b/p", "/cns/od-d/home/x/darn-00+00", "a=b|c%d"])
def test_valid_checkpoints(path: str) -> None:
    validate_checkpoint_path(path)


@pytest.mark.parametrize("path", ["", "/cns ", "/cns /flag", "/cns$", "/!@$"])
def test_invalid_checkpoints(path: str) -> None:
    with pytest.raises(SaxError, match="checkpoint_path"):
        validate_checkpoint_path(path)
