"""TRL integration (issue 5): ``HeaPAGRPOTrainer`` on CPU with a tiny model built in the test.

Covers the group layout TRL trains on, rewards reaching the right pool ids (also when a prompt's
completions are split across two processes), release of prompts that were chosen but not trained,
checkpoint/resume equality of the pool, and configuration errors raised before training starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")
os.environ.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", TRANSFORMERS_OFFLINE="1")

import torch
from heapa import NO_PARENT, HeapaError, InvalidInputError, PoolConfig
from heapa.augment import COMPACT_TEMPLATE, STATE_FILE, AugmentationConfig, Sampling, TaggedFormat, Verdict
from heapa.testing import arithmetic_dataset, char_tokenizer, tiny_grpo_config, tiny_model
from heapa.trl import (
    POOL_FILE,
    SUPPORTED_VERSIONS,
    HeaPAGRPOTrainer,
    HeaPAMixin,
    TRLCompatibilityError,
    check_trl_compatibility,
)
from transformers import TrainerCallback
from trl import GRPOTrainer

torch.set_num_threads(1)
# transformers 5.2x warns on every step because TRL reads the renamed gradient-checkpointing flag.
pytestmark = pytest.mark.filterwarnings("ignore:.*gradient_checkpointing.*deprecated:FutureWarning")

G = 4  # num_generations in every test
METRICS = (
    "pool/size",
    "pool/cold",
    "pool/hard",
    "pool/easy",
    "pool/in_flight",
    "pool/archived",
    "pool/evicted",
    "pool/boundary",
    "batch/pass_rate",
    "batch/zero_variance_frac",
    "time/pool_ms",
)


def by_id(heapa_id, **kwargs):
    """Reward determined by the prompt id alone: (id % 5) / 4, so every group's mean is known."""
    return [(i % 5) / 4 for i in heapa_id]


def expected_score(i: int) -> float:
    return (int(i) % 5) / 4


def digits_only(model, tok):
    """Forces the policy to write digits only (a large negative bias on every other token's logit, on every
    forward pass): a random tiny model then always writes a non-empty, tag-free text, so a test that needs
    variants to exist does not depend on what the model happened to sample."""
    head = model.get_output_embeddings()
    bias = torch.full((head.out_features,), -1e4)  # finite: TRL's entropy of -inf logits would be NaN
    bias[tok.convert_tokens_to_ids(list("0123456789"))] = 0.0
    head.register_forward_hook(lambda module, args, out: out + bias.to(out.device, out.dtype))
    return model


def make_trainer(
    tmp_path, reward_funcs=(by_id,), dataset=None, trainer_cls=HeaPAGRPOTrainer, digits: bool = False, **kwargs
):
    """digits: the policy writes digits only (``digits_only``)."""
    cfg = {"per_device_train_batch_size": 2 * G, "num_generations": G, "max_steps": 3}
    cfg.update(kwargs.pop("config", {}))
    tok = char_tokenizer()
    model = tiny_model(tok, hidden=32, layers=1)
    return trainer_cls(
        model=digits_only(model, tok) if digits else model,
        reward_funcs=list(reward_funcs),
        args=tiny_grpo_config(str(tmp_path), **cfg),
        train_dataset=dataset if dataset is not None else arithmetic_dataset(24),
        processing_class=tok,
        **kwargs,
    )


def all_ids(pool) -> np.ndarray:
    return np.concatenate([pool.ids(s) for s in ("cold", "hard", "easy", "in_flight", "archived")])


# ---------------------------------------------------------------------- one process


def test_trains_and_logs_pool_metrics(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.train()
    stats = trainer.heapa_pool.stats()
    assert stats["added"] == 24
    assert stats["sampled"] == stats["reported"] == 3 * 2  # 3 rounds x 2 prompts
    assert stats["in_flight"] == 0
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 3
    for entry in logged:
        assert set(METRICS) <= set(entry)
        assert entry["time/pool_ms"] > 0
        assert entry["pool/in_flight"] == 0
    # The placeholder dataset only drives the loop: one epoch's worth of rows, no real prompts.
    assert set(trainer.train_dataset["prompt"]) == {""}


def test_group_and_prior_columns_rank_cold_prompts(tmp_path):
    """``group_column`` / ``prior_column`` reach ``Pool.add``: groups gain evidence from the rounds,
    and with ``cold="prior"`` the prompt whose prior is at the target is drawn first."""
    ds = arithmetic_dataset(24)
    ds = ds.add_column("family", [i % 3 for i in range(24)])
    ds = ds.add_column("predicted", [0.5 if i == 17 else 0.95 for i in range(24)])
    trainer = make_trainer(
        tmp_path,
        dataset=ds,
        group_column="family",
        prior_column="predicted",
        prior_confidence=2.0,
        pool_config=PoolConfig(cold="prior", explore=0.0, boundary="absolute", target=0.5, seed=1),
        config={"max_steps": 2},
    )
    pool = trainer.heapa_pool
    ids = pool.ids("cold")
    family = {int(i): m["family"] for i, m in zip(ids.tolist(), pool.metadata(ids), strict=True)}
    first = pool.sample(1)
    assert pool.metadata(first)[0]["predicted"] == 0.5
    pool.release(first)
    trainer.train()
    seen = pool.groups()
    assert set(seen) <= {0, 1, 2} and sum(g["observations"] for g in seen.values()) == 2 * 2
    assert set(family.values()) == {0, 1, 2}


@pytest.mark.parametrize(("steps_per_generation", "num_iterations"), [(1, 1), (2, 1), (2, 2)])
def test_group_layout_and_reward_kwargs(tmp_path, steps_per_generation, num_iterations):
    calls = []

    def spy(prompts, completions, completion_ids, **kwargs):
        calls.append({"prompts": prompts, **kwargs})
        return [0.0] * len(prompts)

    trainer = make_trainer(
        tmp_path,
        [spy],
        config={
            "max_steps": 4,
            "gradient_accumulation_steps": steps_per_generation,
            "num_iterations": num_iterations,
        },
    )
    trainer.train()
    pool = trainer.heapa_pool
    # A round is generated once and reused for steps_per_generation x num_iterations micro-steps.
    rounds = 4 * steps_per_generation // (steps_per_generation * num_iterations)
    assert len(calls) == rounds
    assert pool.stats()["sampled"] == rounds * 2 * steps_per_generation
    for call in calls:
        assert set(call) == {"prompts", "answer", "level", "heapa_id", "trainer_state", "log_extra", "log_metric"}
        ids = np.asarray(call["heapa_id"], dtype=np.uint64)
        groups = ids.reshape(-1, G)
        assert (groups == groups[:, :1]).all(), "each prompt's completions must be adjacent"
        assert len(set(groups[:, 0].tolist())) == len(groups), "a prompt appears once per round"
        assert call["prompts"] == [p for p in pool.prompts(ids)]
        assert call["answer"] == pool.answers(ids)
        assert call["level"] == [m["level"] for m in pool.metadata(ids)]


@pytest.mark.parametrize("verifier", ["by_id", 0, None])
def test_rewards_reach_the_right_ids(tmp_path, verifier):
    def noise(prompts, **kwargs):
        return [0.25] * len(prompts)

    trainer = make_trainer(
        tmp_path,
        [by_id, noise],
        verifier=verifier,
        pool_config=PoolConfig(reward_range=(0.0, 2.0)),
        config={"reward_weights": [1.0, 2.0], "max_steps": 6},
    )
    trainer.train()
    pool = trainer.heapa_pool
    ids = all_ids(pool)
    rec = pool.records(ids)
    visited = rec["visits"] > 0
    assert visited.sum() == 12
    want = np.array([expected_score(i) for i in ids[visited]])
    if verifier is None:  # TRL's weighted total: by_id + 2 * 0.25
        want = want + 0.5
    np.testing.assert_allclose(rec["score"][visited], want, atol=1e-6)
    assert (rec["rollouts"][visited] == G).all()
    threshold = 1.0  # middle of reward_range (0, 2)
    np.testing.assert_array_equal(rec["correct"][visited], np.where(want > threshold, G, 0))


def test_unscorable_groups_are_released(tmp_path):
    def odd_only(heapa_id, **kwargs):
        return [1.0 if i % 2 else None for i in heapa_id]

    trainer = make_trainer(tmp_path, [odd_only], config={"max_steps": 4})
    trainer.train()
    pool = trainer.heapa_pool
    stats = pool.stats()
    assert stats["sampled"] == 8
    assert stats["reported"] + stats["released"] == 8
    ids = all_ids(pool)
    rec = pool.records(ids)
    assert (rec["visits"][ids % 2 == 0] == 0).all()  # even ids were never reported
    assert stats["in_flight"] == 0


def test_failed_round_releases_its_prompts(tmp_path):
    calls = []

    def fails_second_round(prompts, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("verifier crashed")
        return [0.0] * len(prompts)

    trainer = make_trainer(tmp_path, [fails_second_round])
    with pytest.raises(RuntimeError, match="verifier crashed"):
        trainer.train()
    stats = trainer.heapa_pool.stats()
    assert stats["in_flight"] == 0
    assert stats["sampled"] == 4 and stats["reported"] == 2 and stats["released"] == 2


def test_conversational_prompts(tmp_path):
    seen = []

    def spy(prompts, completions, **kwargs):
        seen.extend(prompts)
        return [0.0] * len(prompts)

    trainer = make_trainer(tmp_path, [spy], dataset=arithmetic_dataset(16, conversational=True))
    trainer.train()
    assert all(isinstance(p, list) and p[0]["role"] == "user" for p in seen)
    stored = trainer.heapa_pool.prompts(all_ids(trainer.heapa_pool))
    assert all(json.loads(s)[0]["content"].endswith("=") for s in stored)


def test_inbox_items_join_the_next_round(tmp_path):
    class PushAfterStep2(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:  # the 4 seed prompts have all been trained by now
                pool.inbox.push(["7+7=", "8+8="], answers=["14", "16"], metadata=[{"level": 2}, {"level": 2}])

    chosen = []

    def spy(prompts, **kwargs):
        chosen.extend(prompts)
        return [0.0] * len(prompts)

    trainer = make_trainer(tmp_path, [spy], dataset=arithmetic_dataset(4), callbacks=[PushAfterStep2()])
    pool = trainer.heapa_pool
    trainer.train()
    assert set(chosen[4 * G :]) == {"7+7=", "8+8="}  # new items are cold, and cold goes first


def test_evaluation_keeps_its_own_rows(tmp_path):
    seen = []

    def spy(prompts, **kwargs):
        seen.append("heapa_id" in kwargs)
        return [0.0] * len(prompts)

    config = {"max_steps": 4, "eval_strategy": "steps", "eval_steps": 2, "per_device_eval_batch_size": 2 * G}
    config["dataloader_num_workers"] = 1  # harmless: the loader only carries placeholder rows
    trainer = make_trainer(tmp_path, [spy], eval_dataset=arithmetic_dataset(8, seed=1), config=config)
    trainer.train()
    assert seen.count(True) == 4  # training rounds come from the pool
    assert seen.count(False) > 0  # evaluation batches are TRL's own eval rows
    assert trainer.heapa_pool.stats()["reported"] == 4 * 2
    assert any("eval_loss" in h for h in trainer.state.log_history)


# ---------------------------------------------------------------------- checkpoints


class RecordLoad(HeaPAGRPOTrainer):
    loaded_fingerprint = None

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            self.loaded_fingerprint = self.heapa_pool.fingerprint()


def test_checkpoint_resume_restores_the_pool_exactly(tmp_path):
    saved = {}

    class OnSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            saved[state.global_step] = full.heapa_pool.fingerprint()

    config = {"max_steps": 4, "save_strategy": "steps", "save_steps": 2}
    full = make_trainer(tmp_path / "a", config=config, callbacks=[OnSave()])
    full.train()
    checkpoint = tmp_path / "a" / "checkpoint-2"
    assert (checkpoint / POOL_FILE).exists()

    resumed = make_trainer(tmp_path / "b", config=config, trainer_cls=RecordLoad)
    assert resumed.heapa_pool.fingerprint() != saved[2]  # freshly seeded
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.loaded_fingerprint == saved[2]
    # Same RNG states and the same pool: the resumed run ends where the uninterrupted one did.
    assert resumed.heapa_pool.fingerprint() == full.heapa_pool.fingerprint()
    assert resumed.heapa_pool.stats()["reported"] == full.heapa_pool.stats()["reported"]


class PolicyAnswer:
    """A validator that needs the policy: a candidate waits (parked) until the next step's solve pass, then is
    accepted with the policy's solution as its answer. Deterministic, so every checkpoint holds a queue."""

    name = "policy_answer"
    needs_policy = True
    sampling = Sampling(n=1, max_new_tokens=2, seed=0)

    def validate(self, candidate):
        return Verdict.accept(answer=candidate.policy_outputs[self.name][0].strip() or "0")


def augmentation_config(**overrides) -> AugmentationConfig:
    """Augmentation a random tiny model can take part in: compact prompt, any non-empty text is a variant."""
    kw = dict(
        template=COMPACT_TEMPLATE,
        fmt=TaggedFormat(new="new", difficulty="difficulty", end="end", original="original"),
        use_chat_template=False,
        require_difficulty=False,
        min_chars=1,
        max_new_tokens=6,
        variants_per_parent=2,
        validators=[PolicyAnswer()],
        workers=1,
    )
    kw.update(overrides)
    return AugmentationConfig(**kw)


class WaitForValidation(TrainerCallback):
    """Makes background validation finish before each step ends, so two runs insert at the same steps."""

    trainer = None

    def on_step_end(self, args, state, control, **kwargs):
        assert self.trainer.heapa_augmenter.pipeline.wait_idle(10)


class RecordAugLoad(HeaPAGRPOTrainer):
    loaded_state = None

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            self.loaded_state = self.heapa_augmenter.state_dict()


def held(trainer) -> list[tuple]:
    queue = trainer.heapa_augmenter.state_dict()["pipeline"]["queue"]
    return [(c["parent_id"], c["problem"], c["stage"], c["answer"]) for c in queue]


def test_checkpoint_resume_keeps_the_augmentation_queue(tmp_path):
    config = {"max_steps": 4, "save_strategy": "steps", "save_steps": 2}
    runs = {}
    for name, cls in (("full", HeaPAGRPOTrainer), ("resumed", RecordAugLoad)):
        wait = WaitForValidation()
        trainer = make_trainer(  # digits: variants certainly exist, whatever the random model prefers
            tmp_path / name,
            config=config,
            augmentation=augmentation_config(),
            callbacks=[wait],
            trainer_cls=cls,
            digits=True,
        )
        wait.trainer = runs[name] = trainer
    full, resumed = runs["full"], runs["resumed"]
    full.train()
    checkpoint = tmp_path / "full" / "checkpoint-2"
    saved = json.loads((checkpoint / STATE_FILE).read_text())
    assert len(saved["pipeline"]["queue"]) > 0  # step 2's variants wait for the policy's solutions
    assert all(c["stage"] == 0 and not c["policy_outputs"] for c in saved["pipeline"]["queue"])
    assert all(c["problem"].isdigit() for c in saved["pipeline"]["queue"])  # the forced shape, not sampled text

    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.loaded_state["pipeline"] == saved["pipeline"]  # restored exactly, uids included
    assert resumed.loaded_state["counts"] == saved["counts"]
    # Nothing lost, nothing inserted twice: the resumed run ends where the uninterrupted one did.
    assert resumed.heapa_pool.fingerprint() == full.heapa_pool.fingerprint()
    assert held(resumed) == held(full)
    pool = full.heapa_pool
    ids = all_ids(pool)
    parents = pool.lineage(ids)["parent"]
    kids = ids[parents != np.uint64(NO_PARENT)]
    assert len(kids) > 0 and set(parents[parents != np.uint64(NO_PARENT)].tolist()) <= set(ids.tolist())
    assert all("aug/accepted" in h and "aug/queue_depth" in h for h in full.state.log_history if "loss" in h)
    m = full.heapa_augmenter.metrics()  # the log lags: validation finishes after a step's metrics
    assert m["aug/inserted"] == m["aug/drained"] == len(kids)


def test_augmentation_off_and_on_keep_the_trainer_api(tmp_path):
    assert make_trainer(tmp_path / "off").heapa_augmenter is None
    trainer = make_trainer(tmp_path / "on", augmentation=augmentation_config())
    try:
        assert trainer.heapa_augmenter.pool is trainer.heapa_pool
        assert trainer.heapa_augmenter.encode == trainer.heapa_encode_prompt
    finally:
        trainer.heapa_augmenter.close()


# ---------------------------------------------------------------------- refusing bad configurations


def _dataset(kw, change):
    kw["train_dataset"] = change(kw["train_dataset"])


# case -> (how to break valid trainer kwargs, expected error, message pattern)
BAD = {
    "max_steps unset": (lambda kw: setattr(kw["args"], "max_steps", -1), ValueError, "max_steps"),
    "batch not a multiple of G": (
        lambda kw: setattr(kw["args"], "generation_batch_size", 6),  # changed after TRL's own config check
        ValueError,
        "multiple of num_generations",
    ),
    "no answer column": (lambda kw: _dataset(kw, lambda d: d.remove_columns("answer")), ValueError, "'answer'"),
    "no prompt column": (lambda kw: kw.update(prompt_column="question"), ValueError, "'question'"),
    "reserved id column": (
        lambda kw: _dataset(kw, lambda d: d.add_column("heapa_id", list(range(len(d))))),
        ValueError,
        "reserved",
    ),
    "image column": (
        lambda kw: _dataset(kw, lambda d: d.add_column("image", [None] * len(d))),
        ValueError,
        "multimodal",
    ),
    "iterable dataset": (lambda kw: _dataset(kw, lambda d: d.to_iterable_dataset()), TypeError, "IterableDataset"),
    "no dataset": (lambda kw: kw.update(train_dataset=None), TypeError, "got None"),
    "unknown verifier": (lambda kw: kw.update(verifier="accuracy"), ValueError, "not one of the reward functions"),
    "augmentation": (lambda kw: kw.update(augmentation=object()), TypeError, "augmentation"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_configuration_fails_before_training(tmp_path, case):
    tok = char_tokenizer()
    kwargs = {
        "model": tiny_model(tok, hidden=32, layers=1),
        "reward_funcs": [by_id],
        "args": tiny_grpo_config(str(tmp_path), per_device_train_batch_size=2 * G, num_generations=G),
        "train_dataset": arithmetic_dataset(16),
        "processing_class": tok,
    }
    breaks, error, match = BAD[case]
    breaks(kwargs)
    with pytest.raises(error, match=match):
        HeaPAGRPOTrainer(**kwargs)


def test_rewards_outside_the_pool_range_stop_training_clearly(tmp_path):
    def too_big(prompts, **kwargs):
        return [3.0] * len(prompts)

    trainer = make_trainer(tmp_path, [too_big])
    with pytest.raises(InvalidInputError, match=r"outside PoolConfig.reward_range \(0.0, 1.0\)"):
        trainer.train()
    assert trainer.heapa_pool.stats()["in_flight"] == 0  # the round was released


def test_trl_rejects_groups_that_do_not_divide_the_batch(tmp_path):
    with pytest.raises(ValueError, match="divisible by"):
        tiny_grpo_config(str(tmp_path), per_device_train_batch_size=6, num_generations=4)


def test_signature_guard_names_supported_versions():
    class Drifted(GRPOTrainer):
        def _calculate_rewards(self, inputs, prompts, completions):  # a future TRL drops a parameter
            raise AssertionError

    class Broken(HeaPAMixin, Drifted):
        pass

    with pytest.raises(TRLCompatibilityError, match=r"_calculate_rewards.*trl>=1\.10,<1\.17"):
        check_trl_compatibility(Broken)
    check_trl_compatibility(HeaPAGRPOTrainer)  # the installed TRL passes
    assert SUPPORTED_VERSIONS["trl"] == ">=1.10,<1.17"


def test_pool_too_small_for_a_round(tmp_path):
    trainer = make_trainer(tmp_path, dataset=arithmetic_dataset(24), config={"max_steps": 1})
    trainer.heapa_pool.sample(23)  # hold 23 of 24 prompts in flight elsewhere
    with pytest.raises(HeapaError, match="only 1 of the 2 prompts"):
        trainer.train()
    assert trainer.heapa_pool.stats()["in_flight"] == 23  # the round's partial draw went back


# ---------------------------------------------------------------------- two processes


def test_two_processes_agree_and_split_groups_report_correctly(tmp_path):
    worker = Path(__file__).with_name("trl_dist_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(worker),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]

    # Same choices and pool fingerprints on both ranks, round by round.
    assert ranks[0]["rounds"] == ranks[1]["rounds"]
    rounds = ranks[0]["rounds"]
    assert len(rounds) == 4
    assert len({rnd["fingerprint"] for rnd in rounds} - {None}) == 4  # one distinct pool state per round
    n_local = ranks[0]["n_local"]
    for r, rank in enumerate(ranks):
        for rnd, local in zip(rounds, rank["local_ids"], strict=True):
            layout = [i for i in rnd["ids"] for _ in range(G)]  # every prompt G times in a row
            assert local == layout[r * n_local : (r + 1) * n_local]

    # Rank 0's completions score 1, rank 1's score 0: a group split 2/2 across ranks must read 0.5.
    latest = {}
    for rnd in rounds:
        for p, i in enumerate(rnd["ids"]):
            on_rank0 = sum(1 for j in range(p * G, (p + 1) * G) if j < n_local)
            latest[i] = on_rank0 / G
    assert sorted(set(latest.values())) == [0.0, 0.5, 1.0]  # the straddling group is exercised
    pool = ranks[0]["pool"]
    for i, score in zip(pool["ids"], pool["score"], strict=True):
        assert score == pytest.approx(latest[i])


# ---------------------------------------------------------------------- the example script


@pytest.mark.parametrize(("augment", "preset"), [(False, "paper"), (True, "paper"), (False, "frontier")])
def test_example_script_writes_metrics_and_plot(tmp_path, augment, preset):
    pytest.importorskip("matplotlib")
    script = Path(__file__).parents[1] / "integration" / "train_grpo.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    cmd = [sys.executable, str(script), "--model", "tiny", "--output-dir", str(tmp_path), "--max-steps", "3"]
    cmd += ["--prompts-per-step", "4"]
    cmd += ["--preset", preset]
    if augment:
        cmd += ["--augment", "--format_warmup_steps", "20"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(set(METRICS) <= set(r) for r in rows)
    assert (tmp_path / "metrics.png").stat().st_size > 10_000
    assert "pool summary" in proc.stdout
    if augment:
        assert [r["aug/proposed"] for r in rows] == [8.0, 16.0, 24.0]  # 4 prompts x 2 variants per step
        assert "augmentation: 24 proposed" in proc.stdout
    else:
        assert not any(k.startswith("aug/") for r in rows for k in r)


def test_metrics_reach_tensorboard_through_trls_logging(tmp_path):
    """``report_to="tensorboard"``: the pool and batch metrics go through TRL's own logging, so any
    tracker TRL supports receives them; read back from the event files."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # 4 prompts, 2 a step: from step 3 on the pool has scores and a boundary (undefined before: not logged)
    cfg = {"report_to": ["tensorboard"], "max_steps": 4}
    trainer = make_trainer(tmp_path, dataset=arithmetic_dataset(4), config=cfg)
    trainer.train()
    runs = [root for root, _, files in os.walk(tmp_path) if any("tfevents" in f for f in files)]
    assert runs, f"no event files under {tmp_path}"
    tags = set()
    for run in runs:
        acc = EventAccumulator(run)
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    # transformers prefixes training scalars with "train/"
    logged = {t.removeprefix("train/") for t in tags}
    assert set(METRICS) <= logged, sorted(set(METRICS) - logged)
