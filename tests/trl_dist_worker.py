"""Worker for the two-process test in test_trl.py; run with
``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/trl_dist_worker.py OUT_DIR``.

Each rank trains the same tiny setup (CPU, gloo) and writes ``rank{r}.json``: every round's chosen
ids and pool fingerprint as that rank saw them, the heapa ids of its local rows, and (rank 0) the
pool's final scores. Rank 0's completions all score 1 and rank 1's all score 0, so a prompt whose
group straddles the two ranks must be reported with the fraction of its rows that ran on rank 0.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

os.environ.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", TRANSFORMERS_OFFLINE="1")

import numpy as np
import torch
from heapa.testing import arithmetic_dataset, char_tokenizer, tiny_grpo_config, tiny_model
from heapa.trl import HeaPAGRPOTrainer

warnings.filterwarnings("ignore", category=FutureWarning)
torch.set_num_threads(1)
RANK = int(os.environ["RANK"])
G = 4
PER_DEVICE = 6  # global batch 12 = 3 prompts x 4: the middle prompt is split 2/2 across the ranks


def by_rank(prompts, heapa_id, **kwargs):
    local_ids.append([int(i) for i in heapa_id])
    return [1.0 if RANK == 0 else 0.0] * len(prompts)


class Recording(HeaPAGRPOTrainer):
    def _heapa_after_scoring(self, scored):
        rounds.append({"ids": scored.ids.tolist(), "fingerprint": scored.fingerprint, "step": scored.step})


def main(out: str) -> None:
    tok = char_tokenizer()
    args = tiny_grpo_config(
        out, per_device_train_batch_size=PER_DEVICE, num_generations=G, max_steps=4, max_completion_length=3
    )
    trainer = Recording(
        model=tiny_model(tok, hidden=32, layers=1),
        reward_funcs=[by_rank],
        args=args,
        train_dataset=arithmetic_dataset(12),
        processing_class=tok,
        round_fingerprints=True,
    )
    assert trainer.accelerator.num_processes == 2, "expected two processes"
    trainer.train()
    result = {"rounds": rounds, "local_ids": local_ids, "n_local": PER_DEVICE}
    if trainer.heapa_pool is not None:
        pool = trainer.heapa_pool
        ids = np.concatenate([pool.ids(s) for s in ("hard", "easy", "archived")])
        rec = pool.records(ids)
        result["pool"] = {"ids": ids.tolist(), "score": rec["score"].tolist()}
    else:
        assert RANK != 0, "the main process owns the pool"
    with open(os.path.join(out, f"rank{RANK}.json"), "w") as f:
        json.dump(result, f)
    # Tear gloo down before the interpreter does: left to exit, a rank sometimes aborts with
    # "terminate called without an active exception".
    trainer.accelerator.wait_for_everyone()
    torch.distributed.destroy_process_group()


rounds: list[dict] = []
local_ids: list[list[int]] = []

if __name__ == "__main__":
    main(sys.argv[1])
