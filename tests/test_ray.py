"""heapa.ray on a real local Ray (issue 15): concurrent clients, kill + restore from checkpoint, inbox pushes
from several workers, typed errors across the actor boundary.

One Ray session (``ray.init(num_cpus=2)``) is shared by the module; every test uses its own actor name and
kills its actors at the end. Nothing here asserts on time.
"""

from __future__ import annotations

import subprocess
import sys
import uuid

import numpy as np
import pytest

ray = pytest.importorskip("ray")

import heapa  # noqa: E402
from heapa import InvalidInputError, Pool, PoolConfig, SnapshotError, UnknownPromptError  # noqa: E402
from heapa.ray import PoolActor, PoolClient, StepBatch, get_pool, pool_actor  # noqa: E402

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_session():
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        namespace=f"heapa-test-{uuid.uuid4().hex[:8]}",
        configure_logging=False,
    )
    yield
    ray.shutdown()


@pytest.fixture
def actors(ray_session):
    """Names a fresh actor per call; kills every actor created through it afterwards."""
    made: list[PoolClient] = []

    def make(config=None, **kw) -> PoolClient:
        name = f"pool-{uuid.uuid4().hex[:8]}"
        client = pool_actor(name, config, **kw)
        client.test_name = name  # type: ignore[attr-defined]
        made.append(client)
        return client

    yield make
    for c in made:
        ray.kill(c.actor, no_restart=True)


def cfg(**kw) -> PoolConfig:
    return PoolConfig.frontier(**{"capacity": 4096, "seed": 3, **kw})


def seed(client: PoolClient, n: int) -> np.ndarray:
    return client.add([f"q{i}" for i in range(n)], answers=[str(i) for i in range(n)])


def test_import_heapa_does_not_import_ray():
    code = "import heapa, sys; assert 'ray' not in sys.modules, 'ray imported'; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_actor_matches_an_in_process_pool(actors):
    client = actors(cfg())
    local = Pool(cfg())
    texts = [f"q{i}" for i in range(200)]
    np.testing.assert_array_equal(client.add(texts, answers=texts), local.add(texts, answers=texts))
    rng = np.random.default_rng(0)
    ids_r, ids_l = client.step(k=32), local.sample(32)
    np.testing.assert_array_equal(ids_r, ids_l)
    for s in range(1, 6):
        r = rng.integers(0, 9, size=len(ids_l)) / 8
        ids_r = client.step(ids_r, r, np.full(len(r), 8), (r * 8).astype(int), k=32, step=s)
        local.report(ids_l, r, np.full(len(r), 8), (r * 8).astype(int), step=s)
        ids_l = local.sample(32)
        np.testing.assert_array_equal(ids_r, ids_l)
    assert client.fingerprint() == local.fingerprint()
    assert client.stats() == pytest.approx(local.stats(), nan_ok=True)
    assert len(client) == len(local) == 200
    assert client.prompts(ids_l[:3]) == local.prompts(ids_l[:3])
    rec_r, rec_l = client.records(ids_l), local.records(ids_l)
    np.testing.assert_array_equal(rec_r["state"], rec_l["state"])
    batch = client.step(ids_r, np.full(len(ids_r), 0.5), k=4, payload=True)
    assert isinstance(batch, StepBatch) and len(batch.ids) == 4
    assert batch.prompts == client.prompts(batch.ids) and batch.answers == batch.prompts
    assert batch.epoch == client.epoch()
    assert Pool.from_bytes(client.to_bytes()).fingerprint() == client.fingerprint()


def test_typed_errors_cross_the_boundary(actors):
    client = actors(cfg())
    ids = seed(client, 10)
    drawn = client.sample(4)
    before = client.fingerprint()
    # Through PoolClient: exactly the heapa class, with the engine's message.
    with pytest.raises(InvalidInputError, match=r"rewards\[1\]") as info:
        client.report(drawn, [0.5, float("nan"), 0.5, 0.5])
    assert type(info.value) is InvalidInputError
    with pytest.raises(UnknownPromptError) as info:
        client.prompts(np.array([10**12], dtype=np.uint64))
    assert type(info.value) is UnknownPromptError and isinstance(info.value, KeyError)
    with pytest.raises(InvalidInputError, match="k"):
        client.step(k=-1)
    with pytest.raises(SnapshotError):
        client.save("/nonexistent-dir/x/pool.heapa")
    with pytest.raises(InvalidInputError):  # an id not in flight
        client.step(ids[-1:], [0.5], k=1)
    assert client.fingerprint() == before  # every failed call left the pool unchanged
    # Through the raw handle: Ray's dual exception is still an instance of the heapa class.
    with pytest.raises(heapa.InvalidInputError) as raw:
        ray.get(client.actor.report.remote(drawn, [2.0] * 4))
    assert isinstance(raw.value, ray.exceptions.RayTaskError)
    try:
        ray.get(client.actor.report.remote(drawn[:1], [0.5, 0.5]))
    except heapa.HeapaError as e:  # what user code writes
        assert isinstance(e, ValueError)
    else:
        pytest.fail("no error")
    client.report(drawn, [0.5] * 4)


def test_four_concurrent_clients_nothing_lost_or_trained_twice(actors):
    client = actors(cfg(capacity=2048))
    n = 300
    seed(client, n)

    @ray.remote(num_cpus=0.25)
    def worker(pool: PoolClient, w: int, steps: int, k: int):
        rng = np.random.default_rng(w)
        held = pool.step(k=k)
        batches = [held]
        for s in range(steps):
            r = rng.integers(0, 5, size=len(held)) / 4
            held = pool.step(held, r, np.full(len(held), 4), (r * 4).astype(int), k=k, step=s + 1)
            batches.append(held)
        pool.report(held, np.zeros(len(held)))
        return batches

    steps, k = 25, 24
    results = ray.get([worker.remote(client, w, steps, k) for w in range(4)])
    # Every call succeeded: a report of an id that was not in flight (another client's, or already
    # reported) raises, so no prompt was held by two clients at once and none was reported twice.
    total = sum(len(b) for batches in results for b in batches)
    assert total == 4 * (steps + 1) * k  # every draw was full (300 prompts > 4 x 24 in flight)
    s = client.stats()
    assert s["in_flight"] == 0 and s["held"] == n  # nothing lost, nothing left out
    rec = client.records(np.concatenate([client.ids(p) for p in ("cold", "hard", "easy", "archived")]))
    assert int(rec["visits"].sum()) == total  # every draw was reported exactly once
    for batches in results:
        for b in batches:
            assert len(np.unique(b)) == len(b)


def test_inbox_pushes_from_several_workers(actors):
    client = actors(cfg())
    parents = seed(client, 8)
    drawn = client.sample(8)
    client.report(drawn, np.linspace(0, 1, 8))

    @ray.remote(num_cpus=0.25)
    def pusher(pool: PoolClient, w: int) -> int:
        accepted = 0
        for j in range(5):
            texts = [f"w{w}-{j}-{i}" for i in range(10)]
            accepted += pool.inbox_push(
                texts, answers=["0"] * 10, parents=np.repeat(parents[w], 10), difficulty=np.full(10, 1.1)
            )
        return accepted

    assert ray.get([pusher.remote(client, w) for w in range(6)]) == [50] * 6
    assert client.inbox_len() == 300
    added = client.drain_inbox(step=2)
    assert len(added) == 300 and client.inbox_len() == 0
    texts = client.prompts(added)
    assert sorted(texts) == sorted(f"w{w}-{j}-{i}" for w in range(6) for j in range(5) for i in range(10))
    lin = client.lineage(added)
    assert set(lin["parent"].tolist()) == set(parents[:6].tolist())
    # Pushes and a step's drain in one call.
    ray.get([pusher.remote(client, w) for w in range(2)])
    ids = client.step(k=0, drain_inbox=True, step=3)
    assert len(ids) == 0 and client.inbox_len() == 0 and len(client) == 8 + 300 + 100


def _wait_restarted(client: PoolClient, epoch: str) -> dict:
    for _ in range(600):  # bounded: each try blocks until the actor answers or fails
        try:
            info = client.info()
        except ray.exceptions.RayActorError:
            continue
        if info["epoch"] != epoch:
            return info
    raise AssertionError("actor did not restart")


def test_killed_actor_restores_from_checkpoint(actors, tmp_path):
    path = tmp_path / "pool.heapa"
    client = actors(cfg(), checkpoint=path)
    assert client.info()["restored"] is None
    seed(client, 100)
    ids = client.step(k=16)
    ids = client.step(ids, np.full(16, 0.25), k=16, step=1)
    client.report(ids, np.full(16, 0.75), step=2)
    saved = client.checkpoint()
    assert saved["in_flight"] == 0 and saved["path"] == str(path)
    assert Pool.load(path).fingerprint() == saved["fingerprint"] == client.fingerprint()
    # Work after the checkpoint is lost by a restart.
    lost = client.step(k=16)
    client.add(["never saved"])
    epoch = client.epoch()
    ray.kill(client.actor, no_restart=False)
    info = _wait_restarted(client, epoch)
    assert info["restored"] == {
        "path": str(path),
        "loaded_fingerprint": saved["fingerprint"],
        "released": 0,
        "fingerprint": saved["fingerprint"],
    }
    assert client.fingerprint() == saved["fingerprint"]
    assert len(client) == 100 and client.stats()["in_flight"] == 0
    # The stale batch is refused with the epoch guard, and by state without it.
    with pytest.raises(InvalidInputError, match="stale batch"):
        client.step(lost, np.zeros(16), k=1, expect_epoch=epoch)
    with pytest.raises(InvalidInputError):
        client.report(lost, np.zeros(16))
    # The same name from another handle is the same actor.
    assert get_pool(client.test_name).fingerprint() == saved["fingerprint"]
    assert pool_actor(client.test_name).epoch() == info["epoch"]


def test_restart_releases_what_was_in_flight_at_the_checkpoint(actors, tmp_path):
    path = tmp_path / "pool.heapa"
    client = actors(cfg(), checkpoint=path, checkpoint_every=2)
    seed(client, 50)
    a = client.sample(10)
    b = client.step(k=5)
    b = client.step(b, np.full(5, 0.5), k=5, step=1)
    # The second report saves (after the report, before the draw): a is in flight in the checkpoint.
    b = client.step(b, np.full(5, 0.5), k=5, step=2)
    saved = Pool.load(path)
    assert saved.stats()["in_flight"] == 10
    expected = Pool.from_bytes(saved.to_bytes())
    expected.release(expected.ids("in_flight"))
    epoch = client.epoch()
    ray.kill(client.actor, no_restart=False)
    info = _wait_restarted(client, epoch)
    assert info["restored"]["released"] == 10
    assert info["restored"]["loaded_fingerprint"] == saved.fingerprint()
    assert client.fingerprint() == expected.fingerprint() == info["restored"]["fingerprint"]
    assert client.stats()["in_flight"] == 0 and len(client) == 50  # released, never lost
    rec = client.records(np.concatenate([a, b]))
    assert set(rec["state"].tolist()) <= {"cold", "hard", "easy"}


def test_existing_actor_with_other_config_is_refused(actors, tmp_path):
    client = actors(cfg())
    name = client.test_name
    assert pool_actor(name).fingerprint() == client.fingerprint()
    with pytest.raises(InvalidInputError, match="seed"):
        pool_actor(name, cfg(seed=4))
    with pytest.raises(InvalidInputError, match="checkpoint"):
        pool_actor(name, checkpoint=tmp_path / "other.heapa")


def test_plain_class_checks(tmp_path):
    with pytest.raises(InvalidInputError, match="checkpoint_every"):
        PoolActor(cfg(), None, 5)
    path = tmp_path / "p.heapa"
    Pool(cfg()).save(path)
    with pytest.raises(InvalidInputError, match="capacity"):
        PoolActor(cfg(capacity=10), str(path))
    actor = PoolActor(None, str(path))
    assert actor.info()["restored"]["released"] == 0
    with pytest.raises(InvalidInputError, match="report_ids and rewards"):
        actor.step([1], k=1)
