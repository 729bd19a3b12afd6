"""Saxml extra inputs -> sampling options."""

from __future__ import annotations

import math

import pytest

from sax.errors import Code, SaxError
from sax.generation import SamplingOptions
from sax.server.sampling import BASIC_FIELDS, apply_options, sampling_from_extra


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
    "extra",
    [
        {"temprature": 1.0},
        {"temperature": -1},
        {"temperature": "hot"},
        {"temperature": math.nan},
        {"temperature": math.inf},
        {"temperature": 5},
        {"per_example_max_decode_steps": 0},
        {"per_example_max_decode_steps": -3},
        {"per_example_max_decode_steps": 2.5},
        {"per_example_top_p": 1.5},
        {"per_example_top_p": math.nan},
        {"per_example_top_k": -2},
        {"num_samples": 0},
        {"num_samples": True},
        {"seed": math.inf},
        {"stop": [""]},
        {"presence_penalty": 2.5},
        {"frequency_penalty": -math.inf},
        {"repetition_penalty": 0},
        {"min_p": 1.5},
        {"min_tokens": -1},
        {"stop_token_ids": [-1]},
        {"ignore_eos": 1},
    ],
)
def test_bad_inputs_name_the_key(extra: dict[str, object]) -> None:
    [key] = extra
    with pytest.raises(SaxError) as err:
        sampling_from_extra(extra)
    assert err.value.code is Code.INVALID_ARGUMENT
    assert err.value.param == f"extra_inputs.{key}"
    assert f"extra_inputs.{key}" in err.value.message or repr(key) in err.value.message


def test_min_tokens_above_the_limit_names_min_tokens() -> None:
    with pytest.raises(SaxError) as err:
        sampling_from_extra({"min_tokens": 9, "per_example_max_decode_steps": 4})
    assert err.value.param == "extra_inputs.min_tokens"


def test_options_an_engine_does_not_honour_are_refused_by_name() -> None:
    # Left at their defaults they are harmless; set, they would be silently dropped.
    assert apply_options({"min_p": (0.0, "min_p")}, SamplingOptions(), BASIC_FIELDS).min_p == 0
    values = {"presence_penalty": (1.0, "presence_penalty")}
    with pytest.raises(SaxError) as err:
        apply_options(values, SamplingOptions(), BASIC_FIELDS)
    assert err.value.param == "presence_penalty" and "not supported" in err.value.message
    with pytest.raises(SaxError) as unknown:
        sampling_from_extra({"presence_penalty": 1.0}, supported=BASIC_FIELDS)
    assert unknown.value.param == "extra_inputs.presence_penalty"


def test_public_names_label_every_rule() -> None:
    opts = apply_options(
        {
            "logit_bias": ({"5": 100, "7": -1.5}, "logit_bias"),
            "stop_token_ids": ([3, 4], "stop_token_ids"),
            "max_decode_steps": (8, "max_completion_tokens"),
        },
        SamplingOptions(),
    )
    assert opts.logit_bias == ((5, 100.0), (7, -1.5))
    assert (opts.stop_token_ids, opts.max_decode_steps) == ((3, 4), 8)
    with pytest.raises(SaxError) as err:
        apply_options({"logit_bias": ({"5": 101}, "logit_bias")}, SamplingOptions())
    assert err.value.param == "logit_bias"
    with pytest.raises(SaxError) as err:
        apply_options({"max_decode_steps": (0, "max_completion_tokens")}, SamplingOptions())
    assert err.value.param == "max_completion_tokens"
    assert "max_completion_tokens" in err.value.message
    assert "decode_steps" not in err.value.message
