"""The servable registry and strict overrides."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

from sax.errors import Code, SaxError
from sax.models.test import Echo, EchoConfig
from sax.server import registry
from sax.server.servable import LoadSpec, is_placement_key


def test_resolves_registered_paths_only() -> None:
    assert registry.resolve("sax.models.test.Echo") is Echo
    for bad in ["os.system", "sax.models.test.Nope", "sax.server.registry.resolve"]:
        with pytest.raises(SaxError) as err:
            registry.resolve(bad)
        assert err.value.code is Code.INVALID_ARGUMENT
        assert bad in err.value.message


def test_test_servables_are_advertised() -> None:
    paths = registry.servable_paths({"test"})
    assert {"sax.models.test.Echo", "sax.models.test.FailToLoad"} <= set(paths)


def test_each_servable_module_is_the_entry_point_of_its_backend() -> None:
    modules = {ep.value: ep.name for ep in entry_points(group=registry.GROUP)}
    assert modules["sax.models.test"] == "test"
    for path in registry.servable_paths():
        cls = registry.resolve(path)
        assert modules[cls.__module__] == cls.backend, path


def test_overrides_are_strict_and_name_the_key() -> None:
    spec = LoadSpec("/sax/t/e", "sax.models.test.Echo", "None", {"load_delay_s": 0.5, "ram": 123})
    echo = Echo(spec)
    assert isinstance(echo.config, EchoConfig) and echo.config.load_delay_s == 0.5
    with pytest.raises(SaxError, match="'no_such_knob'") as err:
        Echo.parse_config({"no_such_knob": 1})
    assert err.value.code is Code.INVALID_ARGUMENT
    with pytest.raises(SaxError, match="'memory_bytes'"):
        Echo.parse_config({"memory_bytes": "lots"})


def test_placement_keys() -> None:
    assert all(is_placement_key(k) for k in ["ram", "ram8", "constraints", "chip", "topology"])
    assert not any(is_placement_key(k) for k in ["ramp", "temperature", "rams"])
