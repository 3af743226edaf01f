"""Settings objects validate on construction (segpipe/config.py)."""

from __future__ import annotations

import pytest

from segpipe.config import EvalConfig, InferenceConfig, TilingConfig, from_dict, to_dict
from segpipe.errors import ConfigError


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"chunk": 0}, "--chunk"),
        ({"chunk": -5}, "--chunk"),
        ({"chunk": 2.5}, "--chunk"),
        ({"chunk": True}, "--chunk"),
        ({"tile": 0}, "--tile"),
        ({"halo": -1}, "--halo"),
        ({"halo": 1.5}, "--halo"),
    ],
)
def test_bad_tiling_raises_config_error(kwargs, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        TilingConfig(**kwargs)
    assert repr(next(iter(kwargs.values()))) in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"batch_size": 0}, "--batch-size"),
        ({"batch_size": -1}, "--batch-size"),
        ({"torch_threads": 0}, "--torch-threads"),
        ({"device": "tpu"}, "--device"),
    ],
)
def test_bad_inference_settings_raise_config_error(kwargs, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        InferenceConfig(**kwargs)


def test_good_settings_and_round_trip() -> None:
    tiling = TilingConfig(chunk=64, tile=32, halo=0)
    assert from_dict(TilingConfig, to_dict(tiling)) == tiling
    assert TilingConfig().halo is None
    for device in ("auto", "cpu", "cuda", "cuda:1"):
        assert InferenceConfig(device=device).device == device
    assert from_dict(EvalConfig, {"ignore_index": 255}) == EvalConfig(255, False)


def test_from_dict_refuses_unknown_keys() -> None:
    with pytest.raises(ConfigError, match="chunks"):
        from_dict(TilingConfig, {"chunks": 64})


def test_settings_are_frozen() -> None:
    tiling = TilingConfig()
    with pytest.raises(AttributeError):
        tiling.chunk = 5  # type: ignore[misc]
