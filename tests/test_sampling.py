"""Saxml extra inputs -> sampling options."""

from __future__ import annotations

import pytest

from sax.errors import Code, SaxError
from sax.server.sampling import SamplingOptions, sampling_from_extra


def test_saxml_keys_map_to_options() -> None:
    opts = sampling_from_extra(
        {
            "temperature": 0.7,
            "per_example_max_decode_steps": 12.0,
            "per_example_top_k": 40,
            "per_example_top_p": 0.9,
            "num_samples": 3,
            "seed": 7,
            "stop": ["\n", "END"],
        }
    )
    assert opts == SamplingOptions(
        temperature=0.7,
        max_decode_steps=12,
        top_k=40,
        top_p=0.9,
        num_samples=3,
        seed=7,
        stop=("\n", "END"),
    )


def test_defaults_are_kept() -> None:
    base = SamplingOptions(max_decode_steps=5, temperature=0.3)
    assert sampling_from_extra({}, base) == base
    assert sampling_from_extra({"stop": "x"}, base).stop == ("x",)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"temprature": 1.0}, "'temprature'"),
        ({"temperature": -1}, "'temperature'"),
        ({"temperature": "hot"}, "'temperature'"),
        ({"per_example_max_decode_steps": 0}, "'per_example_max_decode_steps'"),
        ({"per_example_max_decode_steps": 2.5}, "'per_example_max_decode_steps'"),
        ({"per_example_top_p": 1.5}, "'per_example_top_p'"),
        ({"num_samples": 0}, "'num_samples'"),
        ({"num_samples": True}, "'num_samples'"),
        ({"stop": [""]}, "'stop'"),
    ],
)
def test_bad_inputs_name_the_key(extra: dict[str, object], needle: str) -> None:
    with pytest.raises(SaxError) as err:
        sampling_from_extra(extra)
    assert err.value.code is Code.INVALID_ARGUMENT
    assert needle in err.value.message
