"""heapa.verl.v1 (verl >= 0.8, the v1 trainer) against the REAL verl 0.9.1 and a REAL TransferQueue 0.1.11.

What is real here: verl's ``RLHFDataset`` (our dataset subclasses it), verl's ``create_rl_dataset``
(``data.custom_cls``) and ``create_rl_sampler``, ``collate_fn``, torchdata's ``StatefulDataLoader``; verl's
``PPOTrainer._build_replay_buffer`` (it loads our class from ``trainer.v1.sampler.custom_sampler`` and calls
its constructor); verl's ``ReplayBuffer`` / ``ReplayBufferAsync`` (our class subclasses them: their ``sample``,
the DAPO filter, eviction, refill and surplus logic run unchanged); TransferQueue itself (controller and a
storage unit as Ray actors on a local Ray, ``tq.init``; every ``kv_*`` call goes through it).

What stands in for verl (the test's own code, labelled ``TRAINER STAND-IN`` below): the part of the v1
trainer and agent loop that writes to TransferQueue: registering prompts (``kv_batch_put`` of ``{uid}`` with
``{"is_prompt": True, "status": "pending", "global_steps": s}``), the rollouts (``{uid}_{session}_0`` keys
with ``rm_scores`` and the prompt's fields, incl. ``extra_info``, then the ``finished``/``failure`` status),
and the trainer's ``kv_clear`` of a trained batch. These mirror verl 0.9.1's ``trainer_base.py`` and
``agent_loop_tq.py`` as read from its source; no model, no vLLM.

verl >= 0.8 needs its own environment: ``requirements/verl1_env.sh .venv .venv-verl1`` (opt-in, not built by
``make deps``). Under another interpreter this file re-runs itself with ``.venv-verl1/bin/python`` if it
exists, and is skipped otherwise.
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import numpy as np
import pytest
from venv_rerun import rerun_in_venv

try:
    import transfer_queue as tq
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer, ReplayBufferAsync

    HAVE_VERL1 = True
except ImportError:
    HAVE_VERL1 = False

pytestmark = pytest.mark.verl


@pytest.mark.skipif(HAVE_VERL1, reason="verl >= 0.8 is importable here: the tests below run directly")
def test_in_verl1_env():
    rerun_in_venv(
        ".venv-verl1",
        __file__,
        "no verl >= 0.8: run `requirements/verl1_env.sh .venv .venv-verl1` (opt-in, see docs/verl.md)",
        timeout=900,
    )


if HAVE_VERL1:
    import ray
    import torch
    from heapa import InvalidInputError
    from heapa.verl import v1
    from heapa.verl.v1 import ID_KEY, ROW_KEY, HeaPAPoolDataset, HeaPAReplayBuffer, HeaPAReplayBufferAsync
    from omegaconf import OmegaConf
    from tensordict import TensorDict
    from torchdata.stateful_dataloader import StatefulDataLoader
    from verl.trainer.ppo.utils import create_rl_dataset, create_rl_sampler
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer
    from verl.utils.dataset.rl_dataset import collate_fn

    N_ROWS, B, N = 16, 4, 4  # dataset rows, prompts per step, rollouts per prompt

    def _rate(row: int) -> float:
        return (row % 5) / 4  # rows 0,5,10,15 always fail, rows 4,9,14 always pass: zero-variance groups

    @pytest.fixture(scope="module")
    def transfer_queue():
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
        tq.init(OmegaConf.create({"backend": {"SimpleStorage": {"num_data_storage_units": 1}}}))
        yield tq
        tq.close()
        ray.shutdown()

    @pytest.fixture
    def files(tmp_path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        def write(name, n):
            rows = [
                {
                    "prompt": [{"role": "user", "content": f"What is {i} + 1?"}],
                    "data_source": "toy",
                    "reward_model": {"ground_truth": str(i + 1)},
                    "extra_info": {"split": name, "index": i},
                }
                for i in range(n)
            ]
            path = tmp_path / f"{name}.parquet"
            pq.write_table(pa.Table.from_pylist(rows), path)
            return str(path)

        return write("train", N_ROWS), write("val", 3)

    def data_config(files, **heapa):
        train, val = files
        return OmegaConf.create(
            {
                "train_files": train,
                "val_files": val,
                "prompt_key": "prompt",
                "filter_overlong_prompts": False,
                "train_batch_size": B,
                "dataloader_num_workers": 0,
                "shuffle": True,
                "seed": 7,
                "custom_cls": {"path": "pkg://heapa.verl.v1", "name": "HeaPAPoolDataset"},
                "heapa": {"preset": "frontier", **heapa},
            }
        )

    def make_buffer(mode="sync", fetch=None, **kwargs):
        """Built the way verl's v1 trainer builds it: PPOTrainer._build_replay_buffer, run on a minimal self."""
        cfg = OmegaConf.create(
            {
                "trainer": {
                    "v1": {
                        "trainer_mode": mode,
                        mode: {},
                        "sampler": {
                            "max_off_policy_threshold": None,
                            "max_off_policy_strategy": "drop",
                            "custom_sampler": {"path": "pkg://heapa.verl.v1", "name": "HeaPAReplayBuffer"},
                            "sampler_kwargs": {"poll_interval": 0.01, **kwargs},
                        },
                    }
                },
                "algorithm": {},
                "data": {"train_batch_size": B},
            }
        )
        fake = SimpleNamespace(config=cfg, trainer_mode=mode, _add_prompts_to_generate=fetch)
        return PPOTrainer._build_replay_buffer(fake)

    # ---- TRAINER STAND-IN: what verl's v1 trainer and agent loop write to TransferQueue ----------------

    class Trainer:
        def __init__(self, dataset, data_cfg, rng, fail_rows=()):
            self.loader_b = StatefulDataLoader(
                dataset,
                batch_size=1,
                sampler=create_rl_sampler(data_cfg, dataset),
                num_workers=0,
                collate_fn=collate_fn,
            )
            self.it = iter(self.loader_b)
            self.rng = rng
            self.fail_rows = set(fail_rows)
            self.global_steps = 1
            self.truth: dict[int, tuple[int, float, int]] = {}  # pool id -> (row, mean, passes) of the last rollout

        def next_row(self):
            try:
                return next(self.it)
            except StopIteration:
                self.it = iter(self.loader_b)
                return next(self.it)

        def submit(self, num_prompts: int) -> int:
            """_add_prompts_to_generate + the agent loop, finishing every rollout at once."""
            for _ in range(num_prompts):
                row = self.next_row()
                extra = row["extra_info"][0]
                uid = str(uuid.uuid4())
                tq.kv_batch_put(
                    keys=[uid],
                    partition_id="train",
                    tags=[{"is_prompt": True, "status": "pending", "global_steps": self.global_steps}],
                )
                passed = (np.arange(N) < _rate(extra[ROW_KEY]) * N).astype(np.float32)
                self.rng.shuffle(passed)
                keys = [f"{uid}_{s}_0" for s in range(N)]
                rm = torch.nested.as_nested_tensor(
                    [torch.tensor([0.0, 0.0, float(p)]) for p in passed], layout=torch.jagged
                )
                fields = TensorDict(
                    {"rm_scores": rm, "extra_info": np.array([dict(extra)] * N, dtype=object)}, batch_size=N
                )
                tags = [{"status": "success", "global_steps": self.global_steps} for _ in keys]
                tq.kv_batch_put(keys=keys, partition_id="train", fields=fields, tags=tags)
                status = "failure" if extra[ROW_KEY] in self.fail_rows else "finished"
                tq.kv_put(key=uid, partition_id="train", tag={"status": status})
                self.truth[int(extra[ID_KEY])] = (extra[ROW_KEY], float(passed.mean()), int(passed.sum()))
            return num_prompts

        def step(self, buffer, submit=True):
            if submit:
                self.submit(B)  # prepare_step: one batch of prompts
            batch, metrics = buffer.sample(global_steps=self.global_steps, partition_id="train", batch_size=B)
            tq.kv_clear(keys=batch.keys, partition_id=batch.partition_id)  # the trainer, after the update
            self.global_steps += 1
            return batch, metrics

    def _clear_tq():
        listed = tq.kv_list() or {}
        for part, items in listed.items():
            if items:
                tq.kv_clear(keys=list(items), partition_id=part)

    @pytest.fixture
    def tqc(transfer_queue):
        _clear_tq()
        v1._SOURCES.clear()
        yield transfer_queue
        _clear_tq()

    def _dataset(files, **heapa):
        cfg = data_config(files, **heapa)
        return create_rl_dataset(cfg.train_files, cfg, tokenizer=None, processor=None, is_train=True), cfg

    # ---- tests -----------------------------------------------------------------------------------------

    def test_verl_builds_both(files, tqc):
        ds, cfg = _dataset(files)
        assert isinstance(ds, HeaPAPoolDataset) and ds.heapa_source is not None
        assert len(ds) == N_ROWS and len(ds.heapa_source.pool) == N_ROWS
        assert ds.heapa_source.pool.config.seed == 7
        val = create_rl_dataset(cfg.val_files, cfg, tokenizer=None, processor=None, is_train=False)
        assert isinstance(val, HeaPAPoolDataset) and val.heapa_source is None  # validation: plain rows, in order
        assert [val[i]["extra_info"]["index"] for i in range(3)] == [0, 1, 2]
        buf = make_buffer()
        assert type(buf) is HeaPAReplayBuffer and isinstance(buf, ReplayBuffer)
        assert buf.filter_groups_metric is None
        abuf = make_buffer("colocate_async")
        assert type(abuf) is HeaPAReplayBufferAsync and isinstance(abuf, ReplayBufferAsync)
        with pytest.raises(InvalidInputError, match="unknown heapa options"):
            make_buffer(bogus=1)

    def test_rows_are_drawn_from_the_pool(files, tqc):
        ds, _ = _dataset(files)
        rows = [ds[0] for _ in range(N_ROWS)]  # the index is ignored: every call draws
        ids = [r["extra_info"][ID_KEY] for r in rows]
        assert len(set(ids)) == N_ROWS  # all distinct: a drawn prompt stays in flight
        assert sorted(r["extra_info"][ROW_KEY] for r in rows) == list(range(N_ROWS))
        for r in rows:  # the row's own data came with it
            assert r["extra_info"]["index"] == r["extra_info"][ROW_KEY]
        with pytest.raises(InvalidInputError, match="in flight"):
            ds[0]

    def test_sync_training_reports_every_trained_group(files, tqc):
        ds, cfg = _dataset(files)
        buf = make_buffer()
        tr = Trainer(ds, cfg, np.random.default_rng(0))
        src = ds.heapa_source
        trained = 0
        for _ in range(6):
            batch, metrics = tr.step(buf)
            assert len({k.split("_")[0] for k in batch.keys}) == B and len(batch.keys) == B * N
            trained += metrics.get("heapa/reported_trained", 0)
            assert metrics["heapa/in_flight"] == 0
        assert trained == 6 * B and not src.drawn and src.pool.stats()["in_flight"] == 0
        # the pool holds exactly what the rollouts scored, by pool id (never by uid or position)
        ids = np.array(sorted(tr.truth), dtype=np.uint64)
        rec = src.pool.records(ids)
        got = dict(zip(ids.tolist(), rec["visits"].tolist(), strict=True))
        assert all(v >= 1 for v in got.values())
        meta = src.pool.metadata(ids)
        for pid, m in zip(ids.tolist(), meta, strict=True):
            assert m[ROW_KEY] == tr.truth[pid][0]

    def test_dapo_filtered_groups_are_reported(files, tqc):
        ds, cfg = _dataset(files)
        tr = Trainer(ds, cfg, np.random.default_rng(1))
        buf = make_buffer(fetch=tr.submit, filter_groups_metric="reward", train_batch_size=B)
        assert buf.filter_groups_metric == "reward" and buf.gen_batch_size == 1
        src = ds.heapa_source
        dropped = trained = 0
        for _ in range(5):
            batch, metrics = tr.step(buf)
            dropped += metrics.get("heapa/reported_dropped", 0)
            trained += metrics.get("heapa/reported_trained", 0)
            assert metrics.get("training/filter_groups/evicted_samples", 0) >= 0
            assert len({k.split("_")[0] for k in batch.keys}) == B
        assert trained == 5 * B
        assert dropped > 0  # zero-variance groups (always pass / always fail) were evicted AND reported
        assert not src.drawn and src.pool.stats()["in_flight"] == 0
        # the evicted, zero-variance prompts carry their score in the pool
        rows = {pid: t for pid, t in tr.truth.items() if t[1] in (0.0, 1.0)}
        assert rows
        ids = np.array(sorted(rows), dtype=np.uint64)
        assert (src.pool.records(ids)["visits"] >= 1).all()

    def test_failed_groups_are_released(files, tqc):
        ds, cfg = _dataset(files)
        tr = Trainer(ds, cfg, np.random.default_rng(2), fail_rows=range(N_ROWS))
        buf = make_buffer()
        _, metrics = tr.step(buf)
        assert metrics["heapa/released_failed"] == B and "heapa/reported_trained" not in metrics
        pool = ds.heapa_source.pool
        assert pool.stats()["in_flight"] == 0
        assert (pool.records(ds.heapa_source.row_ids)["visits"] == 0).all()  # released unchanged, nothing reported

    def test_async_buffer(files, tqc):
        ds, cfg = _dataset(files)
        tr = Trainer(ds, cfg, np.random.default_rng(3))
        buf = make_buffer("colocate_async", fetch=tr.submit)
        tr.submit(2 * B)  # warm-up batches
        for _ in range(3):
            _, metrics = tr.step(buf)
            assert metrics["heapa/reported_trained"] == B
        _, metrics = tr.step(buf, submit=False)
        assert ds.heapa_source.pool.stats()["in_flight"] == len(ds.heapa_source.drawn) == B  # one batch left

    def test_vanished_prompts_are_released_after_a_while(files, tqc):
        ds, cfg = _dataset(files)
        buf = make_buffer(release_after_steps=2)
        tr = Trainer(ds, cfg, np.random.default_rng(4))
        tr.step(buf)  # clock = 1
        lost = ds[0]["extra_info"][ID_KEY]  # drawn, never submitted (as if the dataloader batch was dropped)
        src = ds.heapa_source
        assert lost in src.drawn
        for _ in range(3):
            tr.step(buf)
        assert lost not in src.drawn and src.pool.stats()["in_flight"] == 0

    def test_checkpoint_through_stateful_dataloader(files, tqc):
        ds, cfg = _dataset(files)
        buf = make_buffer()
        tr = Trainer(ds, cfg, np.random.default_rng(5))
        tr.step(buf)
        tr.step(buf)
        ds[0]  # one prompt in flight at the save
        visits = ds.heapa_source.pool.records(ds.heapa_source.row_ids)["visits"]
        assert visits.sum() == 2 * B
        state = tr.loader_b.state_dict()
        ds2, cfg2 = _dataset(files)
        loader2 = StatefulDataLoader(
            ds2, batch_size=1, sampler=create_rl_sampler(cfg2, ds2), num_workers=0, collate_fn=collate_fn
        )
        loader2.load_state_dict(state)
        next(iter(loader2))  # torchdata restores the dataset state lazily, when iteration starts
        src2 = v1.get_source("default")
        assert src2 is ds2.heapa_source
        assert (src2.pool.records(src2.row_ids)["visits"] == visits).all()  # the reports survived
        assert src2.pool.stats()["in_flight"] == 1  # the saved in-flight prompt was released; 1 drawn since
        assert src2.clock == 2

    def test_needs_single_process_dataloader(files, tqc):
        cfg = data_config(files)
        cfg.dataloader_num_workers = 2
        with pytest.raises(InvalidInputError, match="dataloader_num_workers=0"):
            create_rl_dataset(cfg.train_files, cfg, tokenizer=None, processor=None, is_train=True)
        with pytest.raises(InvalidInputError, match="no heapa pool named 'other'"):
            make_buffer(pool="other").sample(1, "train", B)
