"""``heapa inspect`` (issue 16): the report's numbers against the pool's own, path resolution (snapshot,
checkpoint folder, run directory), the picture, and bad input ending in a message rather than a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from heapa import Pool, PoolConfig
from heapa._inspect import POOL_FILE, SCHEMA, STATE_FILE, _distribution, find_pool, main


@pytest.fixture
def pool() -> Pool:
    """Levels and sources in metadata, scored and cold prompts, a lineage chain and a round in flight."""
    rng = np.random.default_rng(0)
    p = Pool(PoolConfig(capacity=500, boundary="absolute", target=0.5, seed=0))
    n = 300
    meta = [{"level": 1 + i % 3, "source": ["a", "b"][i % 2], "uid": f"u{i}"} for i in range(n)]
    p.add([f"problem {i} " + "x" * (i % 50) for i in range(n)], answers=[str(i) for i in range(n)], metadata=meta)
    for step in range(1, 11):
        ids = p.sample(20)
        p.report(ids, rng.uniform(0, 1, len(ids)).round(2), n_rollouts=np.full(20, 8), n_correct=np.arange(20) % 9,
                 step=step)  # fmt: skip
    parent = ids[:1]
    for _ in range(3):  # a chain of depth 3 under one trained prompt
        parent = p.add(["child"], parents=parent, difficulty=[1.0])
    p.sample(5)  # in flight
    return p


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_json_report_matches_the_pool(tmp_path, pool, capsys):
    path = tmp_path / "pool.bin"
    pool.save(path)
    code, out, err = run(capsys, path, "--json", "--top", "3")
    assert code == 0 and err == ""
    r = json.loads(out)
    assert r["schema"] == SCHEMA
    assert r["source"] == {**r["source"], "path": str(path), "kind": "snapshot"}
    stats = pool.stats()
    comp = r["composition"]
    for key in ("cold", "hard", "easy", "in_flight", "archived", "held", "capacity"):
        assert comp[key] == stats[key], key
    assert comp["free"] == stats["capacity"] - stats["held"]
    assert r["boundary"]["value"] == pytest.approx(stats["boundary"])

    # Histograms: one count per scored prompt of the partition, bins over reward_range.
    parts = r["scores"]["partitions"]
    for name, h in parts.items():
        rec = pool.records(pool.ids(name)) if h["count"] else {"score": np.array([])}
        assert h["count"] == len(rec["score"])
        assert sum(h["counts"]) == h["scored"] == int((~np.isnan(rec["score"])).sum())
    assert len(r["scores"]["edges"]) == len(parts["hard"]["counts"]) + 1
    assert r["scores"]["scored"] + r["scores"]["unscored"] == stats["held"]

    # Lineage: the chain is depth 3; fan-out over the three parents.
    ln = r["lineage"]
    assert ln["max_depth"] == 3 and ln["depth"] == {"0": stats["held"] - 3, "1": 1, "2": 1, "3": 1}
    assert ln["children"] == 3 and ln["parents"] == 3 and ln["fan_out"] == {"1": 3}

    # Groups: known keys first, free-text keys (uid) left out; counts add up to the sample.
    assert list(r["groups"]) == ["level", "source"]
    level = r["groups"]["level"]
    assert level["sampled"] == level["of"] == stats["held"]  # under --sample: every prompt
    assert sum(v["count"] for v in level["values"].values()) == stats["held"]
    assert list(level["values"]) == ["1", "2", "3", "(missing)"]  # the chain's children have no metadata

    # Examples: the hardest has the lowest score, the easiest the highest, stalest the earliest last_step.
    ex = r["examples"]
    assert all(len(v) == 3 for v in ex.values())
    scored = [x for name in ("hard", "easy", "archived", "in_flight") for x in pool.records(pool.ids(name))["score"]]
    assert ex["hardest"][0]["score"] == pytest.approx(np.nanmin(scored))
    assert ex["easiest"][0]["score"] == pytest.approx(np.nanmax(scored))
    assert [x["last_step"] for x in ex["stalest"]] == [1, 1, 1]
    assert [x["id"] for x in ex["oldest"]] == [0, 1, 2]
    assert ex["oldest"][0]["prompt"] == pool.prompts([0])[0].strip()


def test_metadata_sample_and_truncation(tmp_path, pool, capsys):
    pool.save(tmp_path / "p.bin")
    code, out, _ = run(capsys, tmp_path / "p.bin", "--json", "--sample", "50", "--width", "12")
    r = json.loads(out)
    assert code == 0 and r["groups"]["level"]["sampled"] == 50
    assert all(len(x["prompt"]) <= 12 for rows in r["examples"].values() for x in rows)


def test_text_and_plot(tmp_path, pool, capsys):
    pool.save(tmp_path / "p.bin")
    png = tmp_path / "p.png"
    code, out, err = run(capsys, tmp_path / "p.bin", "--plot", png)
    assert code == 0 and err == ""
    for section in ("heapa pool:", "boundary", "lineage:", "metadata 'level'", "hardest:", "stalest:"):
        assert section in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checkpoint_and_run_directory(tmp_path, pool, capsys):
    """A run's directory resolves to its newest complete checkpoint; a checkpoint folder to its own pool."""
    run_dir = tmp_path / "run"
    for step, complete in ((2, True), (4, True), (6, False)):
        folder = run_dir / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        pool.save(folder / POOL_FILE)
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        if complete:
            (folder / STATE_FILE).write_text(json.dumps({"format": 1, "fingerprint": 1}))
    (run_dir / "checkpoint-10").mkdir()  # no pool at all
    file, source = find_pool(run_dir)
    assert file == run_dir / "checkpoint-4" / POOL_FILE
    assert source["trainer_step"] == 4 and source["complete"]
    code, out, _ = run(capsys, run_dir / "checkpoint-6", "--json")
    r = json.loads(out)
    assert code == 0 and r["source"]["kind"] == "checkpoint" and not r["source"]["complete"]
    assert r["composition"]["held"] == pool.stats()["held"]


def test_bad_input_is_a_message_not_a_traceback(tmp_path, pool, capsys):
    pool.save(tmp_path / "good.bin")
    data = (tmp_path / "good.bin").read_bytes()
    (tmp_path / "truncated.bin").write_bytes(data[: len(data) // 2])
    (tmp_path / "random.bin").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "empty_dir").mkdir()
    cases = {
        "truncated.bin": "",
        "random.bin": "",
        "empty_dir": "no heapa pool found in",
        "missing.bin": "no heapa pool found in",
    }
    for name, message in cases.items():
        code, out, err = run(capsys, tmp_path / name)
        assert code == 1 and out == "", name
        assert err.startswith("heapa inspect: ") and message in err and "Traceback" not in err, (name, err)
    # End to end through the console entry point.
    proc = subprocess.run(
        [sys.executable, "-m", "heapa", "inspect", str(tmp_path / "truncated.bin")], capture_output=True, text=True
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and proc.stderr.startswith("heapa inspect: ")


def test_distribution_buckets():
    values = np.array([0, 0, 1, 9, 10, 15, 16, 40, 1000])
    assert _distribution(values) == {"0": 2, "1": 1, "9": 1, "10-15": 2, "16-31": 1, "32-63": 1, "512-1023": 1}
    assert _distribution(np.array([], dtype=np.uint32)) == {}
