"""heapa.verl against the REAL verl package (0.7.1, CPU): the sampler built by verl's own ``create_rl_sampler``,
rows from ``HeaPADataset`` (verl's ``RLHFDataset``) through verl's ``collate_fn`` into a real ``DataProto``,
repeated n times, reordered as ``_balance_batch`` may do, with fresh ``uid``s, then ``sampler.update``.

verl 0.7.x cannot share the main environment (it pins hydra's antlr 4.9 and numpy<2), so the Makefile installs
it in ``.venv-verl``, layered over ``.venv`` (requirements/verl_env.sh). Under the main interpreter this file
re-runs itself there; it is skipped only when neither has verl.
"""

from __future__ import annotations

import numpy as np
import pytest
from venv_rerun import rerun_in_venv

try:
    import verl  # noqa: F401
    from verl.experimental.dataset.sampler import AbstractCurriculumSampler  # gone in verl >= 0.8

    HAVE_VERL = True
except ImportError:
    HAVE_VERL = False

pytestmark = pytest.mark.verl


@pytest.mark.skipif(HAVE_VERL, reason="verl is importable here: the tests below run directly")
def test_in_verl_env():
    rerun_in_venv(
        ".venv-verl",
        __file__,
        "no verl: run `make deps` (installs .venv-verl from requirements/verl.lock)",
        timeout=600,
    )


if HAVE_VERL:
    import torch
    from heapa import InvalidInputError, Pool
    from heapa.verl.sampler import ROW_KEY, HeaPADataset, HeaPASampler
    from omegaconf import OmegaConf
    from torchdata.stateful_dataloader import StatefulDataLoader
    from verl import DataProto
    from verl.experimental.dataset.sampler import AbstractCurriculumSampler
    from verl.trainer.main_ppo import create_rl_sampler
    from verl.utils.dataset.rl_dataset import collate_fn

    N_ROWS, B, N = 12, 4, 4  # dataset rows, prompts per step, rollouts per prompt

    def _true_rate(row: int) -> float:
        return (row % 5) / 4  # 0, .25, .5, .75, 1: rollouts of row r pass with this rate

    @pytest.fixture
    def dataset(tmp_path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = [
            {
                "prompt": [{"role": "user", "content": f"What is {i} + 1?"}],
                "data_source": "toy",
                "reward_model": {"ground_truth": str(i + 1)},
                "extra_info": {"split": "train", "index": i},
            }
            for i in range(N_ROWS)
        ]
        path = tmp_path / "train.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
        cfg = OmegaConf.create(
            {"prompt_key": "prompt", "filter_overlong_prompts": False, "cache_dir": str(tmp_path / "cache")}
        )
        return HeaPADataset(str(path), tokenizer=None, config=cfg)

    def data_config(**heapa):
        return OmegaConf.create(
            {
                "train_batch_size": B,
                "dataloader_num_workers": 0,
                "shuffle": True,
                "seed": 7,
                "sampler": {
                    "class_path": "pkg://heapa.verl.sampler",
                    "class_name": "HeaPASampler",
                    "heapa": {"preset": "frontier", **heapa},
                },
            }
        )

    def rollout(batch_dict: dict, rng: np.random.Generator, perm: bool = True) -> DataProto:
        """What RayPPOTrainer.fit does to a batch before update(), minus the models: a real DataProto, a fresh
        uid per prompt, repeated N times (interleaved), token-level scores, rows reordered."""
        batch = DataProto.from_single_dict(batch_dict)
        batch.non_tensor_batch["uid"] = np.array([f"uid-{rng.integers(1 << 60)}" for _ in range(len(batch))], object)
        batch = batch.repeat(repeat_times=N, interleave=True)
        rows = np.array([e[ROW_KEY] for e in batch.non_tensor_batch["extra_info"]])
        passed = (np.arange(len(rows)) % N) < np.array([_true_rate(r) for r in rows]) * N
        scores = torch.zeros(len(rows), 6)
        scores[:, -1] = torch.as_tensor(passed, dtype=torch.float32)  # the reward sits on the last token
        batch.batch["token_level_scores"] = scores
        if perm:
            batch.reorder(torch.as_tensor(rng.permutation(len(batch))))
        return batch

    def loader(dataset, sampler):
        return StatefulDataLoader(dataset, batch_size=B, sampler=sampler, num_workers=0, collate_fn=collate_fn)

    def test_create_rl_sampler_builds_it(dataset):
        sampler = create_rl_sampler(data_config(), dataset)
        assert isinstance(sampler, HeaPASampler) and isinstance(sampler, AbstractCurriculumSampler)
        assert len(sampler) == N_ROWS and len(sampler.pool) == N_ROWS and sampler.batch_size == B
        assert sampler.pool.config.seed == 7 and sampler.pool.config.reinsert == "immediate"
        bad = data_config()
        del bad["dataloader_num_workers"]
        with pytest.raises(AssertionError, match="num_workers"):  # verl's own check
            create_rl_sampler(bad, dataset)

    def test_training_loop_reports_by_row_id(dataset):
        # Cold rows first, so that one epoch draws every row once (the preset's default would redraw a
        # scored row nearer the target before the last cold ones).
        sampler = create_rl_sampler(data_config(cold="fifo"), dataset)
        rng = np.random.default_rng(0)
        dl = loader(dataset, sampler)
        steps = 0
        for batch_dict in dl:
            assert sampler.pool.stats()["in_flight"] == B  # drawn at fetch time, after the last update
            batch = rollout(batch_dict, rng)
            sampler.update(batch=batch)
            assert sampler.pool.stats()["in_flight"] == 0
            steps += 1
        assert steps == N_ROWS // B
        ids = sampler._row_ids
        rec = sampler.pool.records(ids)
        assert rec["visits"].tolist() == [1] * N_ROWS  # one epoch: every row once
        np.testing.assert_allclose(rec["score"], [_true_rate(r) for r in range(N_ROWS)])
        assert rec["rollouts"].tolist() == [N] * N_ROWS
        assert rec["correct"].tolist() == [round(_true_rate(r) * N) for r in range(N_ROWS)]
        assert sampler.pool.metadata(ids[:2]) == [{ROW_KEY: 0}, {ROW_KEY: 1}]

    def test_row_order_does_not_matter(dataset):
        fps = []
        for perm in (False, True):
            sampler = create_rl_sampler(data_config(), dataset)
            rng = np.random.default_rng(3)
            for batch_dict in loader(dataset, sampler):
                sampler.update(batch=rollout(batch_dict, rng, perm=perm))
            fps.append(sampler.pool.fingerprint())
        assert fps[0] == fps[1]

    def test_dropped_groups_are_released(dataset):
        sampler = create_rl_sampler(data_config(), dataset)
        rng = np.random.default_rng(1)
        batch_dict = next(iter(loader(dataset, sampler)))
        batch = rollout(batch_dict, rng, perm=False)
        keep = np.array([e[ROW_KEY] for e in batch.non_tensor_batch["extra_info"]]) != batch_dict["index"][0]
        kept = batch.select_idxs(torch.as_tensor(keep))  # a DAPO-style filter dropped the first prompt's group
        sampler.update(batch=kept)
        rec = sampler.pool.records(sampler._row_ids[batch_dict["extra_info"][0][ROW_KEY]][None])
        assert rec["state"][0] == "cold" and rec["visits"][0] == 0  # back, unchanged
        assert sampler.pool.stats()["in_flight"] == 0

    def test_checkpoint_roundtrip(dataset):
        sampler = create_rl_sampler(data_config(), dataset)
        rng = np.random.default_rng(2)
        dl = loader(dataset, sampler)
        it = iter(dl)
        sampler.update(batch=rollout(next(it), rng))
        next(it)  # drawn, not trained when the checkpoint is taken
        state = dl.state_dict()
        other = create_rl_sampler(data_config(), dataset)
        dl2 = loader(dataset, other)
        dl2.load_state_dict(state)
        iter(dl2)  # torchdata hands the state to the sampler when the iterator is made
        expected = Pool.from_bytes(sampler.state_dict()["pool"])
        expected.release(expected.ids("in_flight"))
        assert other.pool.fingerprint() == expected.fingerprint() and other.updates == 1

    def test_rows_without_id_are_refused(dataset):
        sampler = create_rl_sampler(data_config(), dataset)
        batch_dict = next(iter(loader(dataset, sampler)))
        batch = rollout(batch_dict, np.random.default_rng(0), perm=False)
        batch.non_tensor_batch["extra_info"] = np.array([{"index": 0}] * len(batch), dtype=object)
        with pytest.raises(InvalidInputError, match=ROW_KEY):
            sampler.update(batch=batch)

    def test_options(dataset):
        sampler = create_rl_sampler(data_config(preset="paper", reward_range=[-1, 1], batch_size=2), dataset)
        assert sampler.pool.config.reward_range == (-1.0, 1.0) and sampler.correct_threshold == 0.0
        assert sampler.batch_size == 2 and sampler.pool.config.reinsert == "on_drain"
        with pytest.raises(InvalidInputError):
            create_rl_sampler(data_config(preset="nope"), dataset)
