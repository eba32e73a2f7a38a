"""course_utils.config: mode from COURSE_FAST or the notebook's parameter, seeding, device, pick."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from course_utils import config


@pytest.fixture(autouse=True)
def restore_current_config():
    """setup() stores the configuration globally; put back whatever was there."""
    saved = config._current
    yield
    config._current = saved


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes", "on", "fast", " 1 "])
def test_course_fast_values_meaning_fast(monkeypatch, value):
    monkeypatch.setenv("COURSE_FAST", value)
    assert config.resolve_mode() == "fast"


@pytest.mark.parametrize("value", ["0", "false", "No", "off", "full", ""])
def test_course_fast_values_meaning_full(monkeypatch, value):
    monkeypatch.setenv("COURSE_FAST", value)
    assert config.resolve_mode() == "full"


def test_unset_course_fast_means_full(monkeypatch):
    monkeypatch.delenv("COURSE_FAST", raising=False)
    assert config.resolve_mode() == "full"


@pytest.mark.parametrize(
    "env,fast,expected", [("1", False, "full"), ("0", True, "fast"), ("nonsense", True, "fast"), ("1", 0, "full")]
)
def test_explicit_fast_overrides_env(monkeypatch, env, fast, expected):
    monkeypatch.setenv("COURSE_FAST", env)
    assert config.resolve_mode(fast) == expected


def test_bad_course_fast_message(monkeypatch):
    monkeypatch.setenv("COURSE_FAST", "maybe")
    with pytest.raises(ValueError, match=r"COURSE_FAST='maybe' is not understood: use COURSE_FAST=1 .* COURSE_FAST=0"):
        config.resolve_mode()


def test_bad_fast_parameter_message():
    with pytest.raises(TypeError, match="fast must be True, False or None"):
        config.resolve_mode("yes")


def test_setup_records_mode_seed_device(monkeypatch):
    monkeypatch.setenv("COURSE_FAST", "1")
    cfg = config.setup(seed=7, device="cpu")
    assert (cfg.mode, cfg.fast, cfg.seed, cfg.device) == ("fast", True, 7, torch.device("cpu"))
    assert cfg.threads == torch.get_num_threads()
    assert config.current() is cfg and config.is_fast()
    assert str(cfg) == f"mode=fast  seed=7  device=cpu  torch threads={cfg.threads}"
    cfg_full = config.setup(fast=False, device="cpu")
    assert cfg_full.mode == "full" and not config.is_fast()


def draws():
    return random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist(), torch.randint(0, 10**6, (2,)).tolist()


@pytest.mark.parametrize("seed", [0, 1, 2**40])
def test_set_seed_repeats_python_numpy_torch_draws(seed):
    config.set_seed(seed)
    first = draws()
    config.set_seed(seed)
    assert draws() == first
    config.set_seed(seed + 1)
    assert draws() != first


def test_setup_seeds(monkeypatch):
    config.setup(fast=True, seed=3, device="cpu")
    first = draws()
    config.setup(fast=True, seed=3, device="cpu")
    assert draws() == first


@pytest.mark.parametrize("seed", [-1, 1.5, "0", None])
def test_bad_seed_message(seed):
    with pytest.raises(ValueError, match=f"seed must be a non-negative integer, got {seed!r}"):
        config.set_seed(seed)


def test_get_device_cpu():
    assert config.get_device("cpu") == torch.device("cpu")
    assert config.get_device() == torch.device(
        "cuda" if torch.cuda.is_available() else "mps" if config._mps_available() else "cpu"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_get_device_cuda_unavailable(name):
    with pytest.raises(RuntimeError, match=f"device '{name}' was asked for but torch sees no CUDA GPU; use 'cpu'"):
        config.get_device(name)


@pytest.mark.skipif(config._mps_available(), reason="this machine has Apple MPS")
def test_get_device_mps_unavailable():
    with pytest.raises(RuntimeError, match="device 'mps' was asked for but this torch has no Apple MPS backend"):
        config.get_device("mps")


def test_pick_by_mode():
    config.setup(fast=True, device="cpu")
    assert config.pick(fast=8, full=64) == 8
    assert config.pick(fast=8, full=64, gpu=512) == 8
    config.setup(fast=False, device="cpu")
    assert config.pick(fast=8, full=64) == 64
    assert config.pick(fast=8, full=64, gpu=512) == 64  # gpu only on CUDA


def test_pick_gpu_value_on_cuda():
    # a CUDA configuration, made by hand so the choice can be tested on a CPU machine
    config._current = config.CourseConfig(mode="full", seed=0, device=torch.device("cuda"), threads=1)
    assert config.pick(fast=8, full=64, gpu=512) == 512
    assert config.pick(fast=8, full=64) == 64  # no gpu value: full


def test_versions_keys():
    found = config.versions()
    assert set(found) == {"python", *config.PACKAGES, *config.DEV_PACKAGES}
    assert "missing" not in found.values(), found  # ./course setup installed every one of them
    assert found["torch"] == torch.__version__.split("+")[0] or found["torch"] == torch.__version__
    assert found["numpy"] == np.__version__


def test_versions_of_a_few():
    assert list(config.versions("transformers", "torch")) == ["transformers", "torch"]
    assert config.versions("peft")["peft"] == config.versions()["peft"]
    with pytest.raises(ValueError, match=r"versions\(\): \['pytorch'\] are not packages the course installs"):
        config.versions("pytorch")


def test_check_environment_is_empty_here():
    assert config.check_environment() == []


def test_check_environment_names_the_fix(monkeypatch):
    fake = dict(config.versions(), tokenizers="missing", torch="2.0.1")
    monkeypatch.setattr(config, "versions", lambda: fake)
    problems = config.check_environment()
    assert any("tokenizers is not installed: run `./course setup`" in p for p in problems)
    assert any("torch 2.0.1 is older than 2.1" in p for p in problems)


def test_in_colab_false_here(monkeypatch):
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    assert config.in_colab() is False
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab_20250101")
    assert config.in_colab() is True


# Errors that name the fix, and a failed setup that keeps the previous configuration.
def test_get_device_unknown_name_says_the_fix():
    with pytest.raises((ValueError, RuntimeError), match=r"'gpu'.*'cuda'"):
        config.get_device("gpu")


def test_failed_setup_keeps_the_previous_configuration():
    before = config.setup(fast=True, seed=1, device="cpu")
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        config.setup(fast=False, seed=-1, device="cpu")
    assert config.current() is before
