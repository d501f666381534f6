"""Stateful property test: the public `Pool` API against a small pure-Python model.

The model keeps every held prompt's partition, float32 score (normalised to
[-1, 1]), visit count and FIFO sequence number, and predicts everything except
the engine's random choices: for boundary sampling it computes the candidate
window and checks that the engine's picks come from it, then follows the picks.
After every step the partitions (in the engine's listing order), records,
counters and the boundary are compared.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import pytest
from heapa import NO_PARENT, CapacityError, InvalidInputError, Pool, PoolConfig, UnknownPromptError
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

f32 = np.float32


def store(v: float) -> float:
    """The engine's score storage: clamp to [-1, 1], round to float32, fold -0.0."""
    s = float(f32(min(max(v, -1.0), 1.0)))
    return 0.0 if s == 0.0 else s


@dataclass
class P:
    state: str  # cold | scored | in_flight | archived
    score: float | None
    seq: int
    visits: int = 0
    estimated: bool = False
    parent: int | None = None
    ready: int = 0  # revisit_fraction: drawable again once this many prompts were sampled in total


class Model:
    def __init__(self, cfg: PoolConfig) -> None:
        self.cfg = cfg
        self.lo, self.hi = cfg.reward_range
        self.mod = cfg.capacity + 1
        self.p: dict[int, P] = {}
        self.next_seq = 0
        self.c = dict.fromkeys(
            (
                "added",
                "sampled",
                "reported",
                "released",
                "evicted",
                "dropped",
                "reinsertions",
                "estimated",
                "orphaned",
                "drained",
                "inbox_pushed",
            ),
            0,
        )
        self.target = store(self.norm(cfg.target))

    # -- scale ---------------------------------------------------------------------------
    def norm(self, r: float) -> float:
        v = 2.0 * (r - self.lo) / (self.hi - self.lo) - 1.0
        return min(max(v, -1.0), 1.0)

    def denorm(self, s: float) -> float:
        return self.lo + (s + 1.0) * 0.5 * (self.hi - self.lo)

    # -- partitions ----------------------------------------------------------------------
    def key(self, i: int) -> tuple[float, int, int]:
        """The engine's order: score, then when last added or reported."""
        return (self.p[i].score, self.p[i].seq, i % self.mod)

    def desc_runs(self, ids: list[int]) -> list[int]:
        """Score descending, equal scores least recently trained first."""
        return sorted(ids, key=lambda i: (-self.p[i].score, self.p[i].seq, i % self.mod))

    def ids_in(self, state: str) -> list[int]:
        return [i for i, p in self.p.items() if p.state == state]

    def cold(self) -> list[int]:
        return sorted(self.ids_in("cold"), key=lambda i: self.p[i].seq)

    def split(self, scored: list[int] | None = None) -> tuple[list[int], list[int]]:
        """(hard, easy), each sorted by key ascending."""
        s = sorted(self.ids_in("scored") if scored is None else scored, key=self.key)
        if self.cfg.boundary == "absolute":
            hard = [i for i in s if self.p[i].score < self.target]
            easy = [i for i in s if self.p[i].score >= self.target]
            return hard, easy
        h = math.floor(self.cfg.low_fraction * len(s) + 0.5)
        return s[:h], s[h:]

    def window(self, scored: list[int], need: int) -> list[int]:
        """The 2·need candidates nearest the boundary, in the engine's order."""
        hard, easy = self.split(scored)
        want = min(2 * need, len(scored))
        up, down = list(easy), self.desc_runs(hard)
        out: list[int] = []
        if self.cfg.boundary == "quantile":
            easy_turn = True
            while len(out) < want:
                first, second = (up, down) if easy_turn else (down, up)
                out.append((first or second).pop(0))
                easy_turn = not easy_turn
        else:
            t = f32(self.target)
            while len(out) < want:
                take_up = f32(self.p[up[0]].score) - t < t - f32(self.p[down[0]].score) if up and down else bool(up)
                out.append((up if take_up else down).pop(0))
        return out

    def boundary(self) -> float:
        if self.cfg.boundary == "absolute":
            return self.cfg.target
        hard, easy = self.split()
        if easy:
            return self.denorm(self.p[easy[0]].score)
        if hard:
            return self.denorm(self.p[hard[-1]].score)
        return math.nan

    # -- operations ------------------------------------------------------------------------
    def victim(self) -> int | None:
        cands = [i for i, p in self.p.items() if p.state in ("scored", "archived")]
        if cands:
            return (min if self.cfg.eviction == "hardest" else max)(cands, key=self.key)
        cold = self.cold()
        return cold[0] if cold else None

    def newcomer_loses(self, score: float | None, v: int | None) -> bool:
        if v is None:
            return True
        if score is None:
            return False
        vs = self.p[v].score
        if vs is None:  # the only candidates are cold
            return True
        return score < vs if self.cfg.eviction == "hardest" else score > vs

    def return_scored(self, i: int) -> None:
        p = self.p[i]
        if self.cfg.drop_solved and p.score >= 1.0:
            event("dropped solved")
            del self.p[i]
            self.c["dropped"] += 1
        else:
            p.state = "scored"


class PoolMachine(RuleBasedStateMachine):
    @initialize(
        capacity=st.one_of(st.integers(1, 6), st.integers(7, 40)),
        boundary=st.sampled_from(["quantile", "absolute"]),
        low_fraction=st.sampled_from([0.5, 0.25, 0.7, 0.1]),
        sampling=st.sampled_from(["medium", "mixed", "uniform", "prioritized"]),
        eviction=st.sampled_from(["hardest", "easiest"]),
        reinsert=st.sampled_from(["on_drain", "immediate"]),
        revisit=st.sampled_from([0.0, 0.0, 0.3, 0.6]),
        drop_solved=st.booleans(),
        stat=st.sampled_from(["latest", "ema"]),
        reward_range=st.sampled_from([(0.0, 1.0), (-1.0, 1.0), (0.0, 10.0)]),
        target_frac=st.sampled_from([0.5, 0.25, 0.0, 1.0, 0.3]),
        seed=st.integers(0, 2**32),
    )
    def setup(
        self,
        capacity,
        boundary,
        low_fraction,
        sampling,
        eviction,
        reinsert,
        revisit,
        drop_solved,
        stat,
        reward_range,
        target_frac,
        seed,
    ):
        lo, hi = reward_range
        self.cfg = PoolConfig(
            capacity=capacity,
            boundary=boundary,
            low_fraction=low_fraction,
            target=lo + target_frac * (hi - lo),
            sampling=sampling,
            eviction=eviction,
            reinsert=reinsert,
            revisit_fraction=revisit if reinsert == "immediate" else 0.0,
            drop_solved=drop_solved,
            stat=stat,
            ema_alpha=0.3,
            reward_range=reward_range,
            seed=seed,
        )
        self.pool = Pool(self.cfg)
        self.m = Model(self.cfg)
        self.ghosts: list[int] = []  # ids that must not resolve
        self.n_added = 0
        self.queue: list[tuple[str, int | None]] = []  # inbox, FIFO
        self.pending: list[tuple[str, int | None]] = []  # drained, waiting for a free slot

    # -- helpers ----------------------------------------------------------------------------
    def reward(self, frac: float) -> float:
        return self.m.lo + frac * (self.m.hi - self.m.lo)

    def held_in(self, state: str) -> list[int]:
        return sorted(self.m.ids_in(state))

    # -- rules ------------------------------------------------------------------------------
    @rule(
        items=st.lists(
            st.one_of(st.none(), st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]), st.floats(0.0, 1.0)),
            min_size=0,
            max_size=12,
        ),
        all_scored=st.sampled_from([False, True, True]),
    )
    def add(self, items, all_scored):
        self.do_add([0.5 if x is None else x for x in items] if all_scored else [None] * len(items))

    @rule(n=st.integers(5, 30), seed=st.integers(0, 2**16), grid=st.booleans())
    def add_many_scored(self, n, seed, grid):
        rng = np.random.default_rng(seed)
        fr = rng.integers(0, 5, n) / 4 if grid else rng.random(n)
        self.do_add(fr.tolist())

    def do_add(self, items: list[float | None]) -> None:
        """Adds prompts: all scored (reward fractions) or all cold (None)."""
        m = self.m
        texts = self.texts(len(items))
        if items and items[0] is not None:
            rewards = [self.reward(x) for x in items]
            scores = [store(m.norm(r)) for r in rewards]
        else:
            rewards = None
            scores = [None] * len(items)
        if items and len(m.ids_in("in_flight")) >= self.cfg.capacity:
            self.expect_capacity_error(lambda: self.pool.add(texts, rewards=rewards))
            return
        ids = self.pool.add(texts, rewards=rewards).tolist()
        self.admit_all(ids, texts, [(sc, None, 1.0) for sc in scores])

    @precondition(lambda self: self.m.p)
    @rule(data=st.data(), n=st.integers(1, 6), with_d=st.booleans())
    def add_children(self, data, n, with_d):
        """Children of held prompts, without rewards: estimated from the parent."""
        m = self.m
        parents = data.draw(st.lists(st.sampled_from(sorted(m.p)), min_size=n, max_size=n))
        d = data.draw(st.lists(st.floats(0.5, 1.6), min_size=n, max_size=n)) if with_d else None
        texts = self.texts(n)
        if len(m.ids_in("in_flight")) >= self.cfg.capacity:
            self.expect_capacity_error(lambda: self.pool.add(texts, parents=parents, difficulty=d))
            return
        ids = self.pool.add(texts, parents=np.array(parents, dtype=np.uint64), difficulty=d).tolist()
        self.admit_all(ids, texts, [(None, p, 1.0 if d is None else d[j]) for j, p in enumerate(parents)])

    @rule(n=st.integers(1, 5), with_parents=st.booleans(), data=st.data())
    def push(self, n, with_parents, data):
        m = self.m
        texts = self.texts(n)
        parents = None
        if with_parents and m.p:
            parents = data.draw(st.lists(st.sampled_from(sorted(m.p)), min_size=n, max_size=n))
        assert self.pool.inbox.push(texts, parents=parents) == n
        for j, t in enumerate(texts):
            self.queue.append((t, None if parents is None else parents[j]))
        m.c["inbox_pushed"] += n

    @rule(limit=st.one_of(st.none(), st.integers(0, 6)))
    def drain(self, limit):
        m = self.m
        take = len(self.queue) if limit is None else min(limit, len(self.queue))
        self.pending += self.queue[:take]
        del self.queue[:take]
        ids = self.pool.drain_inbox(max=limit).tolist()
        if len(m.ids_in("in_flight")) >= self.cfg.capacity:
            assert ids == []
            return
        items, self.pending = self.pending, []
        assert len(ids) == len(items)
        self.admit_all(ids, [t for t, _ in items], [(None, p, 1.0) for _, p in items])
        m.c["drained"] += len(ids)

    def texts(self, n: int) -> list[str]:
        self.n_added += n
        return [f"p{self.n_added - n + j}" for j in range(n)]

    def expect_capacity_error(self, fn) -> None:
        fp = self.pool.fingerprint()
        with pytest.raises(CapacityError):
            fn()
        assert self.pool.fingerprint() == fp

    def admit_all(self, ids: list[int], texts: list[str], items: list[tuple[float | None, int | None, float]]) -> None:
        """Follows the engine admitting (score, parent, difficulty) items in order."""
        m = self.m
        assert len(ids) == len(items)
        for i, (s, parent, d) in zip(ids, items, strict=True):
            m.c["added"] += 1
            estimated = False
            if parent is not None:
                if parent not in m.p:
                    m.c["orphaned"] += 1
                    event("orphaned on admission")
                elif m.p[parent].score is not None:
                    ps = m.p[parent].score
                    dd = min(max(d, 0.75), 1.33)
                    s = store(min(max(ps / dd if ps >= 0 else ps * dd, -1.0), 1.0))
                    estimated = True
            if len(m.p) >= self.cfg.capacity:
                v = m.victim()
                if m.newcomer_loses(s, v):
                    event("newcomer evicted on arrival")
                    m.c["evicted"] += 1
                    assert i % m.mod == self.cfg.capacity, "a prompt evicted on arrival gets a grave id"
                    self.ghosts.append(i)
                    continue
                event(f"evicted a {m.p[v].state} prompt")
                del m.p[v]
                self.ghosts.append(v)
                m.c["evicted"] += 1
            assert i not in m.p
            assert i % m.mod < self.cfg.capacity
            alive_parent = parent if parent is not None and parent in m.p else None
            m.p[i] = P(
                state="cold" if s is None else "scored",
                score=s,
                seq=m.next_seq,
                estimated=estimated,
                parent=alive_parent,
            )
            m.c["estimated"] += estimated
            m.next_seq += 1
        alive = [(i, t) for i, t in zip(ids, texts, strict=True) if i in m.p]
        assert self.pool.prompts([i for i, _ in alive]) == [t for _, t in alive]

    @rule(k=st.integers(0, 10))
    def sample(self, k):
        self.do_sample(k)

    @rule(k=st.integers(1, 10), data=st.data())
    def train_step(self, k, data):
        """One trainer step: sample k, report them all."""
        got = self.do_sample(k)
        if got:
            self.do_report(got, data)

    def do_sample(self, k: int) -> list[int]:
        m = self.m
        got = self.pool.sample(k).tolist()
        if k == 0:
            assert got == []
            return
        if self.cfg.revisit_fraction > 0:
            # Cooled-down prompts return (ready first); early only when the draw would come up short.
            for i in sorted(m.ids_in("archived"), key=lambda i: (m.p[i].ready, m.p[i].seq)):
                live = len(m.ids_in("cold")) + len(m.ids_in("scored"))
                if m.p[i].ready > m.c["sampled"] and live >= k:
                    break
                m.p[i].state = "scored"
                event("revisit: cooled down" if m.p[i].ready <= m.c["sampled"] else "revisit: early")
        live = len(m.ids_in("cold")) + len(m.ids_in("scored"))
        if self.cfg.reinsert == "on_drain" and live < k and m.ids_in("archived"):
            for i in sorted(m.ids_in("archived")):
                m.return_scored(i)
                if i not in m.p:
                    self.ghosts.append(i)
            m.c["reinsertions"] += 1
            event("on-drain reinsertion")
        cold = m.cold()[:k]
        assert got[: len(cold)] == cold, "cold prompts first, FIFO"
        rest = got[len(cold) :]
        need = k - len(cold)
        scored = m.ids_in("scored")
        assert len(rest) == min(need, len(scored))
        assert len(set(rest)) == len(rest)
        if need and scored:
            if need >= len(scored):
                assert set(rest) == set(scored)
            elif self.cfg.sampling == "medium":
                event("medium window")
                assert set(rest) <= set(m.window(scored, need))
            elif self.cfg.sampling == "mixed":
                event("mixed window")
                e = need // 2
                hard, easy = m.split(scored)
                easiest = (m.desc_runs(easy) + m.desc_runs(hard))[:e]
                assert rest[:e] == easiest
                remaining = [i for i in scored if i not in set(easiest)]
                assert set(rest[e:]) <= set(m.window(remaining, need - e))
            else:
                assert set(rest) <= set(scored)
        for i in got:
            m.p[i].state = "in_flight"
        m.c["sampled"] += len(got)
        return got

    def has_in_flight(self) -> bool:
        return any(p.state == "in_flight" for p in self.m.p.values())

    def has_other(self) -> bool:
        return any(p.state != "in_flight" for p in self.m.p.values())

    @precondition(has_in_flight)
    @rule(data=st.data())
    def report(self, data):
        fl = self.held_in("in_flight")
        ids = data.draw(st.lists(st.sampled_from(fl), unique=True, min_size=1, max_size=len(fl)))
        self.do_report(ids, data)

    def do_report(self, ids: list[int], data) -> None:
        m = self.m
        fr = data.draw(
            st.lists(
                st.one_of(st.sampled_from([0.0, 0.25, 0.5, 1.0]), st.floats(0.0, 1.0)),
                min_size=len(ids),
                max_size=len(ids),
            )
        )
        rewards = [self.reward(x) for x in fr]
        self.pool.report(np.array(ids, dtype=np.uint64), rewards)
        for i, r in zip(ids, rewards, strict=True):
            p = m.p[i]
            new = m.norm(r)
            observed = p.score is not None and not p.estimated
            if self.cfg.stat == "ema" and observed:
                a = self.cfg.ema_alpha
                value = a * new + (1.0 - a) * p.score
            else:
                value = new
            p.score = store(value)
            p.estimated = False
            p.visits += 1
            p.seq, m.next_seq = m.next_seq, m.next_seq + 1
            if self.cfg.reinsert == "on_drain":
                p.state = "archived"
            elif self.cfg.revisit_fraction > 0 and not (self.cfg.drop_solved and p.score >= 1.0):
                p.state = "archived"
                p.ready = m.c["sampled"] + math.ceil(self.cfg.revisit_fraction * len(m.p))
            else:
                m.return_scored(i)
                if i not in m.p:
                    self.ghosts.append(i)
        m.c["reported"] += len(ids)

    @precondition(has_in_flight)
    @rule(data=st.data())
    def release(self, data):
        m = self.m
        fl = self.held_in("in_flight")
        ids = data.draw(st.lists(st.sampled_from(fl), unique=True, min_size=1, max_size=len(fl)))
        self.pool.release(ids)
        for i in ids:
            m.p[i].state = "cold" if m.p[i].score is None else "scored"
        m.c["released"] += len(ids)

    @precondition(has_in_flight)
    @rule(data=st.data())
    def bad_report_twice(self, data):
        """Reporting an id twice in one call changes nothing."""
        i = data.draw(st.sampled_from(self.held_in("in_flight")))
        self.check_rejected([i, i], rf"id {i} appears twice \(indices 0 and 1\)")

    @precondition(has_other)
    @rule(data=st.data())
    def bad_report_not_in_flight(self, data):
        """Reporting an id that is not in flight changes nothing."""
        fl = self.held_in("in_flight")
        i = data.draw(st.sampled_from(sorted(i for i, p in self.m.p.items() if p.state != "in_flight")))
        self.check_rejected([*fl[:1], i], rf"id {i} at index {len(fl[:1])} is not in flight")

    def check_rejected(self, ids, match):
        fp = self.pool.fingerprint()
        with pytest.raises(InvalidInputError, match=match):
            self.pool.report(ids, [self.reward(0.5)] * len(ids))
        with pytest.raises(InvalidInputError, match=match):
            self.pool.release(ids)
        assert self.pool.fingerprint() == fp

    @precondition(lambda self: self.ghosts)
    @rule(data=st.data())
    def ghost_ids_do_not_resolve(self, data):
        g = data.draw(st.sampled_from(self.ghosts))
        if g in self.m.p:  # cannot happen: ids are never reused
            raise AssertionError(f"id {g} came back")
        fp = self.pool.fingerprint()
        with pytest.raises(UnknownPromptError, match=rf"unknown prompt id {g} at index 0"):
            self.pool.records([g])
        with pytest.raises(UnknownPromptError):
            self.pool.report([g], [self.reward(0.5)])
        assert self.pool.fingerprint() == fp

    @rule()
    def snapshot_round_trip(self):
        """Continue with a pool loaded from a snapshot: it must behave identically."""
        data = self.pool.to_bytes()
        fp = self.pool.fingerprint()  # after to_bytes: see test_save_does_not_change_fingerprint
        self.pool = Pool.from_bytes(data)
        assert self.pool.fingerprint() == fp

    # -- invariants ------------------------------------------------------------------------
    @invariant()
    def partitions_match(self):
        m, pool = self.m, self.pool
        hard, easy = m.split()
        assert pool.ids("cold").tolist() == m.cold()
        assert pool.ids("hard").tolist() == hard
        assert pool.ids("easy").tolist() == easy
        assert pool.ids("archived").tolist() == sorted(m.ids_in("archived"), key=m.key)
        assert pool.ids("in_flight").tolist() == sorted(m.ids_in("in_flight"), key=lambda i: i % m.mod)

    @invariant()
    def records_match(self):
        m = self.m
        ids = sorted(m.p)
        r = self.pool.records(np.array(ids, dtype=np.uint64))
        exp = [math.nan if m.p[i].score is None else m.denorm(m.p[i].score) for i in ids]
        np.testing.assert_allclose(r["score"], exp, rtol=0, atol=1e-6 * (m.hi - m.lo))
        assert r["visits"].tolist() == [m.p[i].visits for i in ids]
        assert r["estimated"].tolist() == [m.p[i].estimated for i in ids]
        # A parent that is no longer held reads as NO_PARENT (ids are never reused).
        assert r["parent"].tolist() == [m.p[i].parent if m.p[i].parent in m.p else NO_PARENT for i in ids]
        hard = set(m.split()[0])
        for i, st_ in zip(ids, r["state"].tolist(), strict=True):
            want = m.p[i].state
            if want == "scored":
                want = "hard" if i in hard else "easy"
            assert st_ == want, (i, st_, want)

    @invariant()
    def stats_match(self):
        m = self.m
        s = self.pool.stats()
        for k, v in m.c.items():
            assert s[k] == v, (k, s[k], v)
        hard, easy = m.split()
        assert s["cold"] == len(m.ids_in("cold"))
        assert (s["hard"], s["easy"]) == (len(hard), len(easy))
        assert s["in_flight"] == len(m.ids_in("in_flight"))
        assert s["archived"] == len(m.ids_in("archived"))
        assert s["held"] == len(self.pool) == len(m.p) <= self.cfg.capacity
        assert s["size"] == s["cold"] + s["hard"] + s["easy"]
        assert s["inbox_queued"] == len(self.queue)
        assert s["delayed"] == len(self.pending)
        b = m.boundary()
        if math.isnan(b):
            assert math.isnan(s["boundary"])
        else:
            assert abs(s["boundary"] - b) <= 1e-6 * (m.hi - m.lo)


PoolMachine.TestCase.settings = settings(
    # HEAPA_MODEL_EXAMPLES=2000 for a deeper local run.
    max_examples=int(os.environ.get("HEAPA_MODEL_EXAMPLES", "100")),
    stateful_step_count=45,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestPoolModel = PoolMachine.TestCase
