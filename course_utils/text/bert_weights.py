"""BERT weights in transformers' layout: parameter names, weight files, config.json.

The course's encoder layer names its parts as chapter 02 does (``self_attn.q_proj``,
``ff.linear1``, ``norm1``...); transformers' ``BertLayer`` names them ``attention.self.query``,
``intermediate.dense``, ``attention.output.LayerNorm``... :data:`_LAYER_TO_HF` maps one to the
other, and :func:`_own_body_to_hf` maps a whole parameter name. :func:`load_state_dict_file`
reads the weights of a model directory (model.safetensors, its shards, or a tensors-only
pytorch_model.bin) and :func:`_read_config` its config.json, each with a one-line error naming
the file. The models' ``from_hf`` / ``to_hf`` / ``save_pretrained`` / ``from_pretrained``
(:mod:`course_utils.text.bert`) are built on these.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

from course_utils import checkpoints
from course_utils.text.bert_layers import BertConfig, _check_config, _require_transformers
from course_utils.checkpoints import CheckpointError

__all__ = ["LoadReport", "load_state_dict_file"]

# the course's layer names -> transformers' BertLayer names (inside encoder.layer.{i})
_LAYER_TO_HF = {
    "self_attn.q_proj": "attention.self.query",
    "self_attn.k_proj": "attention.self.key",
    "self_attn.v_proj": "attention.self.value",
    "self_attn.out_proj": "attention.output.dense",
    "norm1": "attention.output.LayerNorm",
    "ff.linear1": "intermediate.dense",
    "ff.linear2": "output.dense",
    "norm2": "output.LayerNorm",
}

# keys some checkpoints hold that carry no weights (old buffers) or duplicate a tied one
_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
_BODY_PREFIXES = ("embeddings.", "encoder.")


class LoadReport(NamedTuple):
    """What :meth:`load_hf_state_dict` left out: weights kept at their fresh init, checkpoint keys unused."""

    missing_keys: list[str]
    unexpected_keys: list[str]


# ---------------------------------------------------------------- checkpoint files


def load_state_dict_file(directory: str | Path) -> dict[str, torch.Tensor]:
    """The weights of a transformers model directory: model.safetensors (or its shards), else
    pytorch_model.bin read with ``torch.load(weights_only=True)`` (tensors only, no code)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    files = checkpoints.weight_files(directory)  # model.safetensors, or the shards its index names
    if files:
        state = {}
        for path in files:
            checkpoints.safetensors_header(path)  # a damaged file: one line naming it, not SafetensorError
            try:
                state.update(load_file(path))
            except Exception as err:  # noqa: BLE001 - the library's message names no file
                raise CheckpointError(
                    f"{path} could not be read as safetensors ({checkpoints._short(err)}); {checkpoints.FIX_WEIGHTS}."
                ) from None
        return state
    legacy = directory / "pytorch_model.bin"
    if legacy.is_file():
        try:
            return torch.load(legacy, map_location="cpu", weights_only=True)
        except Exception as err:  # weights_only refuses anything but plain tensors
            raise CheckpointError(
                f"{legacy} could not be read safely ({type(err).__name__}): convert it to safetensors "
                "(load it once where you trust it and call save_pretrained) and use model.safetensors."
            ) from None
    present = sorted(p.name for p in directory.iterdir())
    raise FileNotFoundError(
        f"{directory} has no weights file: expected model.safetensors (or pytorch_model.bin); it holds {present}. "
        "Save a model there with model.save_pretrained(dir)."
    )


def _read_config(directory: str | Path, **overrides):
    _require_transformers()
    directory = Path(directory)
    if not directory.exists():
        raise FileNotFoundError(
            f"model directory {directory} does not exist: check the path, or train and "
            "save a model there first (model.save_pretrained(dir))."
        )
    if not directory.is_dir():
        raise FileNotFoundError(
            f"{directory} is a file; from_pretrained expects a directory holding config.json and model.safetensors."
        )
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{directory} has no config.json, so it is not a model directory in the "
            "transformers layout (config.json + model.safetensors); save one with save_pretrained."
        )
    model_type = checkpoints.read_json(config_file).get("model_type")
    if model_type != "bert":
        raise CheckpointError(
            f"{directory} holds a {model_type!r} model, not BERT (config.json model_type must be "
            "'bert'); this class reads BERT checkpoints only."
        )
    try:
        config = BertConfig.from_pretrained(str(directory), **overrides)
        _check_config(config)
    except (TypeError, ValueError, KeyError, AttributeError) as err:  # values transformers or we cannot use
        raise CheckpointError(f"{config_file}: {checkpoints._short(err)}") from None
    return config


def _own_body_to_hf(name: str) -> str:
    """A BertModel parameter name -> transformers' name (only the encoder layers differ)."""
    if name.startswith("encoder.layers."):
        index, rest = name[len("encoder.layers.") :].split(".", 1)
        module, param = rest.rsplit(".", 1)
        return f"encoder.layer.{index}.{_LAYER_TO_HF[module]}.{param}"
    return name


def _name_list(what: str, names: list[str]) -> str:
    if not names:
        return ""
    shown = ", ".join(names[:10]) + (f" ... ({len(names)} in all)" if len(names) > 10 else "")
    return f"{what} keys: {shown}. "


def _head_name(key: str) -> str:
    return key.rsplit(".", 1)[0]
