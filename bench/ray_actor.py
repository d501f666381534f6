"""Round trips per second through a heapa pool actor, beside Ray's own floor (issue 15).

    flock /tmp/heapa-bench.lock .venv/bin/python bench/ray_actor.py --json runs/ray_actor.json

Starts a local Ray (``--cpus``, default 2), fills one ``PoolActor`` with ``--size`` scored prompts (default 1M)
and measures, in the same run:

* ``empty``: an empty actor call (``ping``), Ray's floor for one round trip;
* ``step``: one training step's pool traffic as ONE call, ``PoolClient.step(last_ids, rewards, n_rollouts,
  n_correct, k=K)`` (report the last batch of K ids, sample the next K; packed into one bytes object each way);
* ``step_two_calls``: the same traffic as two calls (``report`` then ``sample``), the naive actor;
* ``step_payload``: ``step(..., payload=True)``, the K prompt texts returned in the same call;
* ``step_numpy``: ``ray.get(actor.step.remote(...))`` on the raw handle (four numpy arguments, a numpy result);
* ``in_process``: ``Pool.report`` + ``Pool.sample`` on an identical pool in this process (no Ray);
* ``in_process_packed``: the same step through the adapter but without Ray (``_pack``, a local
  ``PoolActor.step_packed``, the ids unpacked): the adapter's own cost is this minus ``in_process``.

Rewards are precomputed (16 batches, cycled), so the timed loops measure pool traffic only. One-client
results also give the median and 90th percentile of the per-call latency.

each from 1 client (the driver) and from ``--clients`` concurrent clients (Ray actors with 0.25 CPU each, all
calling the pool actor at once; rate = all their calls / wall time). Prints one JSON object:
``{"size", "k", "cpus", "results": {NAME: {"clients", "calls", "seconds", "per_s", "mean_us"[, "median_us",
"p90_us"]}}, "ratios",
"targets", "env"}``. Targets: ``step`` from one client <= 1.5x ``empty`` (mean latency), and ``step`` from 4
clients >= 500 per second.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import heapa
import numpy as np
import ray
from heapa import PoolConfig
from heapa.ray import PoolActor, PoolClient, _ids_from, _pack


def _rewards(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    correct = rng.binomial(16, 0.5, size=n)
    return correct / 16.0, np.full(n, 16), correct


def _reward_table(seed: int, k: int, m: int = 16) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``m`` precomputed (rewards, n_rollouts, n_correct) batches (int64 counts, as a trainer has them): the
    timed loops cycle through them, so drawing synthetic rewards is not counted as pool traffic."""
    rng = np.random.default_rng(seed)
    return [_rewards(rng, k) for _ in range(m)]


def _batch(table: list, j: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r, nr, nc = table[j % len(table)]
    return (r, nr, nc) if n == len(r) else (r[:n], nr[:n], nc[:n])


def _fill(pool_add, size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    chunk = 200_000
    for start in range(0, size, chunk):
        n = min(chunk, size - start)
        pool_add([f"q{i}" for i in range(start, start + n)], None, rng.binomial(16, 0.5, size=n) / 16.0)


def _loop(kind: str, actor, k: int, seconds: float, seed: int) -> tuple[int, float, list[float]]:
    """Calls of one kind for about ``seconds``; returns (calls, elapsed, per-call seconds)."""
    table = _reward_table(seed, k)
    pool = PoolClient(actor)
    ids = pool.sample(k) if kind != "empty" else None
    calls = 0
    lat: list[float] = []
    t0 = now = time.perf_counter()
    deadline = t0 + seconds
    while True:
        start = now
        if kind == "empty":
            ray.get(actor.ping.remote())
        elif kind == "step":
            ids = pool.step(ids, *_batch(table, calls, len(ids)), k=k)
        elif kind == "step_payload":
            ids = pool.step(ids, *_batch(table, calls, len(ids)), k=k, payload=True).ids
        elif kind == "step_two_calls":
            pool.report(ids, *_batch(table, calls, len(ids)))
            ids = pool.sample(k)
        elif kind == "step_numpy":  # the raw handle: numpy arguments and result, serialised by Ray one by one
            ids = ray.get(actor.step.remote(ids, *_batch(table, calls, len(ids)), k=k))
        calls += 1
        now = time.perf_counter()
        lat.append(now - start)
        if now >= deadline:
            break
    elapsed = now - t0
    if ids is not None:
        pool.release(ids)
    return calls, elapsed, lat


@ray.remote(num_cpus=0.25)
class Client:
    def __init__(self, actor) -> None:
        self.actor = actor

    def ready(self) -> None:
        ray.get(self.actor.ping.remote())

    def run(self, kind: str, k: int, start_at: float, seconds: float, seed: int) -> tuple[int, float]:
        while time.time() < start_at:  # all clients start together
            time.sleep(0.001)
        calls, elapsed, _ = _loop(kind, self.actor, k, seconds, seed)
        return calls, elapsed


def _result(clients: int, calls: int, seconds: float, lat: list[float] | None = None) -> dict:
    out = {
        "clients": clients,
        "calls": calls,
        "seconds": round(seconds, 3),
        "per_s": round(calls / seconds, 1),
        "mean_us": round(seconds / calls * 1e6 * clients, 1),  # latency seen by one client
    }
    if lat:
        q = np.percentile(np.asarray(lat) * 1e6, [50, 90])
        out.update(median_us=round(float(q[0]), 1), p90_us=round(float(q[1]), 1))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("-k", type=int, default=512, help="ids per batch (default 512)")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    ap.add_argument("--json", help="also write the JSON here")
    args = ap.parse_args(argv)

    config = PoolConfig.frontier(capacity=args.size + 4 * args.clients * args.k, seed=0)
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        actor = ray.remote(PoolActor).options(num_cpus=0).remote(config)
        _fill(lambda p, a, r: ray.get(actor.add.remote(p, a, r)), args.size, 0)
        assert ray.get(actor.size.remote()) == args.size

        local_actor = PoolActor(config)  # a PoolActor object in this process, not an actor
        local = local_actor._pool
        _fill(local.add, args.size, 0)
        table = _reward_table(1, args.k)
        results = {}
        # in_process: Pool.report + Pool.sample, no Ray. in_process_packed: the same step through the adapter
        # without Ray (PoolClient's packing, PoolActor.step_packed on a local PoolActor, unpacking the ids).
        for name in ("in_process", "in_process_packed"):
            ids = local.sample(args.k)
            n, lat = 0, []
            t0 = now = time.perf_counter()
            while now - t0 < args.seconds:
                start = now
                batch = _batch(table, n, len(ids))
                if name == "in_process":
                    local.report(ids, *batch)
                    ids = local.sample(args.k)
                else:
                    ids = _ids_from(local_actor.step_packed(_pack(ids, *batch, k=args.k)))
                n += 1
                now = time.perf_counter()
                lat.append(now - start)
            results[name] = _result(1, n, now - t0, lat)
            local.release(ids)
        del local, local_actor

        kinds = ["empty", "step", "step_two_calls", "step_payload", "step_numpy"]
        for kind in kinds:
            _loop(kind, actor, args.k, min(1.0, args.seconds), 99)  # warm-up
            calls, el, lat = _loop(kind, actor, args.k, args.seconds, 2)
            results[kind] = _result(1, calls, el, lat)

        clients = [Client.remote(actor) for _ in range(args.clients)]
        ray.get([c.ready.remote() for c in clients])
        for kind in kinds:
            start = time.time() + 0.5
            out = ray.get([c.run.remote(kind, args.k, start, args.seconds, 10 + i) for i, c in enumerate(clients)])
            calls = sum(c for c, _ in out)
            results[f"{kind}_x{args.clients}"] = _result(args.clients, calls, max(e for _, e in out))
        stats = ray.get(actor.stats.remote())
    finally:
        ray.shutdown()

    ratio = results["step"]["mean_us"] / results["empty"]["mean_us"]
    many = results[f"step_x{args.clients}"]["per_s"]
    report = {
        "size": args.size,
        "k": args.k,
        "cpus": args.cpus,
        "seconds_per_measurement": args.seconds,
        "results": results,
        "ratios": {
            "step_over_empty": round(ratio, 3),
            "step_over_empty_median": round(results["step"]["median_us"] / results["empty"]["median_us"], 3),
            "step_two_calls_over_empty": round(results["step_two_calls"]["mean_us"] / results["empty"]["mean_us"], 3),
            "step_payload_over_step": round(results["step_payload"]["mean_us"] / results["step"]["mean_us"], 3),
        },
        "targets": {
            "step_over_empty<=1.5": {"value": round(ratio, 3), "ok": ratio <= 1.5},
            f"step_x{args.clients}_per_s>=500": {"value": many, "ok": many >= 500},
        },
        "pool_after": {k: stats[k] for k in ("held", "in_flight", "sampled")},
        "env": {
            "heapa": heapa.__version__,
            "ray": ray.__version__,
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
            "machine": platform.machine(),
        },
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
