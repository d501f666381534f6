"""The reference implementation's *approach*, applied to heapa's semantics.

Written from the behaviour documented in ``reference-spec.md`` (§2-§4, §6,
§7, §11-§12) -- no reference code was copied. It keeps the reference's data
structures and algorithms so users can see what they are replacing:

* one record object per prompt (a dataclass with a ``meta`` dict); records
  are copied when they are sampled and archived (the reference deep-copies);
* a FIFO ``deque`` of cold records; a ``heapq`` max-heap for the hard ("low")
  side; *twin* min/max heaps with lazy deletion (a set of live sequence
  numbers) for the easy ("high") side, plus a deep clean that rebuilds both
  twin heaps every 1000 heap operations (the reference counts added items)
  when either holds > 10,000 entries or more than twice the live count;
* a local rebalance after every insert that moves at most 4 items, so the
  quantile split is only approximate;
* eviction of the hardest item by a **linear scan** of the hard heap, then a
  swap-pop and a full ``heapify`` (archived records are scanned too, since
  heapa's capacity covers them);
* ``report``/``release`` find each record by a **linear scan** over the held
  containers (the slime port's ``update_reward``), O(n) per prompt;
* uniform / prioritized sampling rebuild candidate lists and weights from all
  records on every call (the multi-heap / prioritized-baseline trainers);
* lineage as dict-of-sets (parent -> children) + child -> parent dict; a
  refresh copies the maps, runs a **recursive** acyclicity DFS (which raises
  ``RecursionError`` on chains deeper than ~1000 -- reported here as
  :class:`ReferenceCrash`), computes heights leaves-first and aggregates with
  dict lookups;
* checkpoints are a ``pickle`` of the whole state (the reference uses
  ``torch.save`` of pickled records).
"""

from __future__ import annotations

import copy
import heapq
import pickle
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from . import (
    NO_PARENT,
    BaselinePool,
    CapacityError,
    ReferenceCrash,
    adjust_scalar,
    check_refresh_args,
    child_estimate,
    clamp_difficulty,
    from_score,
    to_score,
)

CLEANUP_FREQUENCY = 1000
DEEP_CLEAN_MIN_ENTRIES = 10_000
MAX_REBALANCE_MOVES = 4
REINSERT_CHUNK = 512


@dataclass
class Record:
    record_id: int
    prompt: str
    answer: str | None = None
    reward: float | None = None  # normalised score in [-1, 1]; None = cold
    est_reward: float | None = None
    creation_time: float = field(default_factory=time.time)
    meta: dict = field(default_factory=dict)


def _copy_record(rec: Record) -> Record:
    new = copy.copy(rec)
    new.meta = dict(rec.meta)
    return new


class ReferenceDesignPool(BaselinePool):
    name = "reference_design"

    LOW_FRACTION_RANGE = (0.05, 0.95)  # the reference clips q

    def __init__(self, **config):
        super().__init__(**config)

        self._cold: deque[Record] = deque()
        self._low: list = []  # (-reward, seq, record): top = easiest hard item
        self._high_min: list = []  # (reward, seq, record)
        self._high_max: list = []  # (-reward, seq, record)
        self._active_high: set[int] = set()  # live seqs of the twin heaps
        self._seq = 0
        self._ops = 0
        self._in_flight: list[Record] = []
        self._archive: dict[int, Record] = {}
        self._index: dict[int, Record] = {}
        self._p2c: dict[int, set[int]] = {}
        self._c2p: dict[int, int] = {}
        self._next_id = 0
        self._added = self._sampled = self._reported = self._evicted = 0
        self.refresh_error: str | None = None

    # ----------------------------------------------------------------- sizes
    def __len__(self) -> int:
        return len(self._cold) + len(self._low) + len(self._active_high)

    def _in_flight_count(self) -> int:
        return len(self._in_flight)

    def _held(self) -> int:
        return len(self) + len(self._archive) + len(self._in_flight)

    # ----------------------------------------------------------------- heaps
    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _push_low(self, rec: Record) -> None:
        heapq.heappush(self._low, (-rec.reward, self._next_seq(), rec))

    def _push_high(self, rec: Record) -> None:
        seq = self._next_seq()
        heapq.heappush(self._high_min, (rec.reward, seq, rec))
        heapq.heappush(self._high_max, (-rec.reward, seq, rec))
        self._active_high.add(seq)

    def _peek_high_min(self):
        h = self._high_min
        while h and h[0][1] not in self._active_high:
            heapq.heappop(h)
        return h[0] if h else None

    def _pop_high_min(self) -> Record:
        e = self._peek_high_min()
        heapq.heappop(self._high_min)
        self._active_high.discard(e[1])
        return e[2]

    def _pop_high_max(self) -> Record:
        h = self._high_max
        while h[0][1] not in self._active_high:
            heapq.heappop(h)
        e = heapq.heappop(h)
        self._active_high.discard(e[1])
        return e[2]

    def _route(self, rec: Record) -> None:
        top = self._peek_high_min()
        if top is None or rec.reward > top[0]:
            self._push_high(rec)
        else:
            self._push_low(rec)  # ties go to the hard side

    def _rebalance(self) -> None:
        """The reference's local rebalance: tolerance +-1, at most 4 moves."""
        n_low, n_high = len(self._low), len(self._active_high)
        target = round(self.low_fraction * (n_low + n_high))
        if abs(n_low - target) <= 1:
            return
        for _ in range(MAX_REBALANCE_MOVES):
            n_low, n_high = len(self._low), len(self._active_high)
            if n_low > target and self._low:
                self._push_high(heapq.heappop(self._low)[2])
            elif n_low < target and n_high:
                self._push_low(self._pop_high_min())
            else:
                break

    def _deep_clean(self) -> None:
        live = len(self._active_high)
        if (
            max(len(self._high_min), len(self._high_max)) > DEEP_CLEAN_MIN_ENTRIES
            or len(self._high_min) > 2 * live
            or len(self._high_max) > 2 * live
        ):
            act = self._active_high
            self._high_min = [e for e in self._high_min if e[1] in act]
            self._high_max = [e for e in self._high_max if e[1] in act]
            heapq.heapify(self._high_min)
            heapq.heapify(self._high_max)

    def _count_ops(self, n: int) -> None:
        self._ops += n
        if self._ops >= CLEANUP_FREQUENCY:
            self._deep_clean()
            self._ops = 0

    # -------------------------------------------------------------- eviction
    def _evict_hardest(self) -> None:
        """Linear scan for the hardest item (hard heap and archive), swap-pop, heapify."""
        cands = []
        low = self._low
        if low:
            neg = [e[0] for e in low]  # -reward: the hardest item has the largest
            j = neg.index(max(neg))
            cands.append((-neg[j], 0, j))
        top = self._peek_high_min()
        if top is not None:
            cands.append((top[0], 1, None))
        if self._archive:
            rec = min(self._archive.values(), key=lambda r: r.reward)
            cands.append((rec.reward, 2, rec.record_id))
        if cands:
            _, where, key = min(cands, key=lambda c: (c[0], c[1]))
            if where == 0:
                rec = low[key][2]
                low[key] = low[-1]
                low.pop()
                heapq.heapify(low)
            elif where == 1:
                rec = self._pop_high_min()
            else:
                rec = self._archive.pop(key)
        elif self._cold:
            rec = self._cold.popleft()
        else:  # pragma: no cover - guarded in add
            raise CapacityError("nothing left to evict")
        self._index.pop(rec.record_id, None)  # lineage maps keep the node (dangling)
        self._evicted += 1

    # ------------------------------------------------------------------- add
    def _insert(self, rec: Record) -> None:
        full = self._held() >= self.capacity
        if rec.reward is None:
            self._cold.append(rec)
        else:
            self._route(rec)
        if full:
            self._evict_hardest()
        self._rebalance()

    def add(self, prompts, answers=None, rewards=None, metadata=None, parents=None, difficulty=None) -> np.ndarray:
        n = len(prompts)
        if n and len(self._in_flight) >= self.capacity:
            raise CapacityError(f"cannot add {n} prompts: all {self.capacity} slots are in flight")
        scores = [None] * n if rewards is None else to_score(rewards, self.reward_range).tolist()
        d = clamp_difficulty(difficulty, n).tolist()
        par = [None] * n
        if parents is not None:
            par = [None if p == NO_PARENT else int(p) for p in np.asarray(parents, dtype=np.uint64).tolist()]
            missing = [p for p in par if p is not None and p not in self._index]
            if missing:
                raise KeyError(f"unknown or evicted parent id {missing[0]}")
        ids = []
        for i in range(n):
            rid = self._next_id
            self._next_id += 1
            p = par[i]
            reward = scores[i]
            meta = {"origin": "seed" if p is None else "augmented", "visits": 0}
            prec = None if p is None else self._index.get(p)
            if prec is not None:  # (a parent evicted earlier in this batch leaves a root)
                meta["parent_id"] = p
                meta["policy_difficulty"] = d[i]
                self._p2c.setdefault(p, set()).add(rid)
                self._c2p[rid] = p
                if reward is None and prec.reward is not None:
                    reward = float(child_estimate(prec.reward, d[i]))
            rec = Record(
                rid,
                prompts[i],
                None if answers is None else answers[i],
                reward,
                reward,
                meta=meta,
            )
            self._index[rid] = rec
            self._insert(rec)
            ids.append(rid)
        self._added += n
        self._count_ops(n)
        return np.array(ids, dtype=np.uint64)

    # ---------------------------------------------------------------- sample
    def sample(self, k: int) -> np.ndarray:
        if k < 0:
            raise ValueError("k must be >= 0")
        if self.reinsert == "on_drain" and len(self) < k and self._archive:
            self._reinsert_all_trained()
        out: list[Record] = []
        while self._cold and len(out) < k:
            out.append(self._cold.popleft())
        need = k - len(out)
        n_scored = len(self._low) + len(self._active_high)
        if need > 0 and n_scored:
            if need >= n_scored:
                out.extend(e[2] for e in self._low)
                out.extend(e[2] for e in self._high_min if e[1] in self._active_high)
                self._low, self._high_min, self._high_max = [], [], []
                self._active_high = set()
            elif self.sampling == "medium":
                out.extend(self._sample_medium(need))
            elif self.sampling == "mixed":
                easy = need // 2
                for _ in range(easy):
                    out.append(self._pop_high_max() if self._active_high else heapq.heappop(self._low)[2])
                if need - easy:
                    out.extend(self._sample_medium(need - easy))
            else:
                out.extend(self._sample_rebuild(need))
            self._rebalance()
        copies = [_copy_record(r) for r in out]  # the reference returns deep copies
        for r in copies:
            self._index[r.record_id] = r
        self._in_flight.extend(copies)
        self._sampled += len(copies)
        return np.array([r.record_id for r in copies], dtype=np.uint64)

    def _sample_medium(self, need: int) -> list[Record]:
        take = min(2 * need, len(self._low) + len(self._active_high))
        cands: list[Record] = []
        from_high: list[bool] = []
        high_turn = True
        for _ in range(take):
            if (high_turn and self._active_high) or not self._low:
                cands.append(self._pop_high_min())
                from_high.append(True)
            else:
                cands.append(heapq.heappop(self._low)[2])
                from_high.append(False)
            high_turn = not high_turn
        chosen = set(self._rng.choice(take, size=need, replace=False).tolist())
        picked = []
        for j, rec in enumerate(cands):
            if j in chosen:
                picked.append(rec)
            elif from_high[j]:
                self._push_high(rec)  # losers go back with new seqs
            else:
                self._push_low(rec)
        return picked

    def _sample_rebuild(self, need: int) -> list[Record]:
        """Uniform / prioritized: rebuild candidates (and weights) from every record."""
        act = self._active_high
        entries = [(e[1], e[2]) for e in self._low] + [(e[1], e[2]) for e in self._high_min if e[1] in act]
        if self.sampling == "uniform":
            idx = self._rng.choice(len(entries), size=need, replace=False)
        else:
            w = np.array(
                [((1.0 - (rec.reward + 1.0) * 0.5) + self.epsilon) ** (1.0 / self.temperature) for _, rec in entries]
            )
            idx = self._rng.choice(len(entries), size=need, replace=False, p=w / w.sum())
        chosen_seqs = {entries[j][0] for j in idx.tolist()}
        picked = [entries[j][1] for j in idx.tolist()]
        self._low = [e for e in self._low if e[1] not in chosen_seqs]
        heapq.heapify(self._low)
        act.difference_update(chosen_seqs)
        return picked

    # -------------------------------------------------------- report/release
    def _find_in_flight(self, rid: int, scan_pool: bool) -> int:
        """Position of ``rid`` in the in-flight list.

        With ``scan_pool`` the held containers are scanned first, as the slime
        port's ``update_reward`` does (O(n) per prompt); otherwise only the
        trainer's in-flight batch is searched (O(k)).
        """
        if scan_pool:
            for rec in self._cold:
                if rec.record_id == rid:
                    raise KeyError(f"prompt {rid} is not in flight")
            for e in self._low:
                if e[2].record_id == rid:
                    raise KeyError(f"prompt {rid} is not in flight")
            for e in self._high_min:
                if e[2].record_id == rid and e[1] in self._active_high:
                    raise KeyError(f"prompt {rid} is not in flight")
        for j, rec in enumerate(self._in_flight):
            if rec.record_id == rid:
                return j
        raise KeyError(f"prompt {rid} is not in flight")

    def _take_in_flight(self, ids, scan_pool: bool) -> list[Record]:
        ids = [int(i) for i in np.asarray(ids, dtype=np.uint64).tolist()]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate ids")
        positions = [self._find_in_flight(rid, scan_pool) for rid in ids]  # validate before mutating
        recs = [self._in_flight[j] for j in positions]
        drop = set(positions)
        self._in_flight = [r for j, r in enumerate(self._in_flight) if j not in drop]
        return recs

    def report(self, ids, rewards, n_rollouts=None, n_correct=None, step=None) -> None:
        scores = to_score(rewards, self.reward_range).tolist()
        if len(scores) != len(ids):
            raise ValueError("ids and rewards differ in length")
        recs = self._take_in_flight(ids, scan_pool=True)
        for rec, s in zip(recs, scores, strict=True):
            rec.reward = rec.est_reward = s
            rec.meta["visits"] = rec.meta.get("visits", 0) + 1
            rec.meta["trained_round"] = step
            if self.reinsert == "immediate":
                self._index[rec.record_id] = rec
                self._route(rec)
                self._rebalance()
            else:
                arch = _copy_record(rec)  # archived copy
                self._archive[rec.record_id] = arch
                self._index[rec.record_id] = arch
        self._reported += len(recs)
        if self.reinsert == "immediate":
            self._count_ops(len(recs))

    def release(self, ids) -> None:
        recs = self._take_in_flight(ids, scan_pool=False)
        for rec in reversed(recs):
            if rec.reward is None:
                self._cold.appendleft(rec)
        for rec in recs:
            if rec.reward is not None:
                self._route(rec)
                self._rebalance()
        self._count_ops(len(recs))

    def _reinsert_all_trained(self) -> None:
        if self.refresh_mode:
            self.refresh(mode=self.refresh_mode)
        recs = list(self._archive.values())
        self._archive = {}
        self._rng.shuffle(recs)
        for start in range(0, len(recs), REINSERT_CHUNK):
            chunk = recs[start : start + REINSERT_CHUNK]
            for rec in chunk:
                rec = _copy_record(rec)
                self._index[rec.record_id] = rec
                self._route(rec)
                self._rebalance()
            self._count_ops(len(chunk))

    # --------------------------------------------------------------- lineage
    def refresh(self, mode="path", temperature=1.0, blend=0.5, direction="reference", scope="archive") -> int:
        check_refresh_args(mode, scope)
        p2c = {p: set(cs) for p, cs in self._p2c.items()}  # the reference copies the maps
        index = dict(self._index)
        nodes = set(index)
        nodes.update(p2c)
        for cs in p2c.values():
            nodes.update(cs)
        try:
            acyclic = _is_acyclic(p2c, nodes)
        except RecursionError as exc:
            self.refresh_error = f"RecursionError in the recursive acyclicity DFS ({exc}); the reference crashes here"
            raise ReferenceCrash(self.refresh_error) from None
        if not acyclic:  # pragma: no cover - lineage built through add() is a forest
            raise ReferenceCrash("lineage cycle detected")
        levels = _levels_from_leaves(p2c, self._c2p, nodes)

        def value(u):
            rec = index.get(u)
            if rec is None:
                return None
            return rec.reward if rec.reward is not None else rec.est_reward

        refreshed: dict[int, float] = {}
        leaves: dict[int, float] = {}
        for level in levels:
            for u in level:
                children = p2c.get(u)
                if not children:
                    leaves[u] = 1.0
                    continue
                leaves[u] = sum(max(1.0, leaves[c]) for c in children)
                vals, weights = [], []
                for c in children:
                    vc = refreshed.get(c, value(c))
                    if vc is None:
                        continue
                    rec = index.get(c)
                    dc = rec.meta.get("policy_difficulty", 1.0) if rec is not None else 1.0
                    vals.append(adjust_scalar(vc, max(dc, 1e-6), direction))
                    weights.append(leaves[c] ** (1.0 / temperature) if mode == "path" else 1.0)
                if not vals:
                    continue
                m = sum(w * v for w, v in zip(weights, vals, strict=True)) / sum(weights)
                a = value(u)
                x = m if a is None else blend * a + (1.0 - blend) * m
                refreshed[u] = min(1.0, max(-1.0, x))
        updated = 0
        for u, x in refreshed.items():
            rec = self._archive.get(u)
            if rec is not None and rec.reward is not None:
                rec.reward = rec.est_reward = x
                updated += 1
        if scope == "all":
            updated += self._rekey_live(refreshed)
        return updated

    def _rekey_live(self, refreshed: dict[int, float]) -> int:
        """Write refreshed values into live records and rebuild the heaps (full heapify)."""
        act = self._active_high
        recs = [e[2] for e in self._low] + [e[2] for e in self._high_min if e[1] in act]
        updated = 0
        for rec in recs:
            x = refreshed.get(rec.record_id)
            if x is not None:
                rec.reward = rec.est_reward = x
                updated += 1
        recs.sort(key=lambda r: r.reward)
        t = round(self.low_fraction * len(recs))
        self._low = [(-r.reward, self._next_seq(), r) for r in recs[:t]]
        heapq.heapify(self._low)
        high = [(r.reward, self._next_seq(), r) for r in recs[t:]]
        self._high_min = high
        self._high_max = [(-x, s, r) for x, s, r in high]
        heapq.heapify(self._high_min)
        heapq.heapify(self._high_max)
        self._active_high = {s for _, s, _ in high}
        return updated

    # ----------------------------------------------------------- persistence
    def save(self, path) -> None:
        with open(path, "wb") as f:
            pickle.dump(self, f, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def load(cls, path) -> ReferenceDesignPool:
        with open(path, "rb") as f:
            return pickle.load(f)

    # ---------------------------------------------------------------- stats
    def records(self, ids) -> dict:
        """Per-prompt view for tests: user-scale score (nan = unscored) and state."""
        where = {}
        for rec in self._cold:
            where[rec.record_id] = "cold"
        for e in self._low:
            where[e[2].record_id] = "hard"
        for e in self._high_min:
            if e[1] in self._active_high:
                where[e[2].record_id] = "easy"
        for rec in self._in_flight:
            where[rec.record_id] = "in_flight"
        for rid in self._archive:
            where[rid] = "archived"
        ids = [int(i) for i in np.asarray(ids, dtype=np.uint64).tolist()]
        scores = []
        for rid in ids:
            rec = self._archive.get(rid) or self._index.get(rid)
            scores.append(np.nan if rec is None or rec.reward is None else rec.reward)
        return {
            "score": from_score(np.array(scores, dtype=np.float64), self.reward_range),
            "state": np.array([where.get(rid, "evicted") for rid in ids]),
        }

    def stats(self) -> dict:
        return {
            "size": len(self),
            "cold": len(self._cold),
            "hard": len(self._low),
            "easy": len(self._active_high),
            "in_flight": len(self._in_flight),
            "archived": len(self._archive),
            "held": self._held(),
            "evicted": self._evicted,
            "added": self._added,
            "sampled": self._sampled,
            "reported": self._reported,
            "inbox": len(self.inbox),
            "memory_bytes": None,
            "refresh_error": self.refresh_error,
        }


def _is_acyclic(p2c: dict[int, set[int]], nodes) -> bool:
    """Recursive three-colour DFS, as in the reference (overflows on deep chains)."""
    color: dict[int, int] = {}

    def visit(u: int) -> bool:
        color[u] = 1
        for c in p2c.get(u, ()):
            cu = color.get(c, 0)
            if cu == 1:
                return False
            if cu == 0 and not visit(c):
                return False
        color[u] = 2
        return True

    return all(color.get(u, 0) != 0 or visit(u) for u in sorted(nodes))


def _levels_from_leaves(p2c, c2p, nodes) -> list[list[int]]:
    """Kahn-style grouping by height: leaves first, a parent after all its children."""
    remaining = {u: len(p2c.get(u, ())) for u in nodes}
    frontier = [u for u, r in remaining.items() if r == 0]
    levels = []
    while frontier:
        levels.append(frontier)
        nxt = []
        for u in frontier:
            p = c2p.get(u)
            if p is not None:
                remaining[p] -= 1
                if remaining[p] == 0:
                    nxt.append(p)
        frontier = nxt
    return levels
