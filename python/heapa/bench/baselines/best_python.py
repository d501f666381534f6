"""The best reasonable pure-Python design of heapa's pool semantics.

What a careful Python engineer would write without a compiled core:

* dense integer ids; per-prompt columns in numpy arrays (score, state, parent,
  difficulty, visits) so batch work (validation, report, uniform/prioritized
  sampling, stats, lineage passes, checkpoints) is vectorised;
* each side of the quantile split is a pair of ``heapq`` heaps (min and max)
  of ``(key, seq, id)`` tuples with lazy deletion: an entry is live iff its
  ``seq`` equals the prompt's current ``_hseq[id]``; heaps are compacted when
  garbage exceeds the live count, so cost stays O(log n) amortised;
* the hard/easy split is kept exact after every call (moves between sides pop
  one heap's extreme and push it on the other side);
* eviction of the hardest prompt compares the tops of three min-heaps (hard,
  easy, archive) -- O(log n), no scans;
* bulk loads sort with numpy and build the heaps directly (a sorted list is a
  heap), no per-item pushes;
* lineage is a parent column; refresh is a level-synchronous numpy pass
  (pointer jumping for depths, ``np.add.at`` per level) with an iterative
  reverse-insertion-order loop for very deep forests -- never recursion;
* checkpoints pickle the numpy columns (protocol 5) and rebuild the heaps.

Batches are admitted as a whole (insert, then evict the surplus), so a child
whose parent is evicted by an earlier prompt of the *same* batch keeps the
estimate computed at the start of the call, where heapa (admitting one prompt
at a time) makes it a cold root; partition counts agree everywhere else.
"""

from __future__ import annotations

import pickle
from heapq import heapify, heappop, heappush

import numpy as np

from . import (
    ARCHIVED,
    COLD,
    EASY,
    EVICTED,
    HARD,
    IN_FLIGHT,
    NO_PARENT,
    BaselinePool,
    CapacityError,
    adjust,
    check_refresh_args,
    child_estimate,
    clamp_difficulty,
    from_score,
    target_hard,
    to_score,
)

_NAN = float("nan")
_STATE_NAMES = {
    COLD: "cold",
    HARD: "hard",
    EASY: "easy",
    IN_FLIGHT: "in_flight",
    ARCHIVED: "archived",
    EVICTED: "evicted",
}


class BestPythonPool(BaselinePool):
    name = "best_python"

    def __init__(self, **config):
        super().__init__(**config)

        self._n = 0  # ids handed out so far (ids are 0.._n-1)
        self._score = np.empty(0, dtype=np.float64)  # normalised; nan = unscored
        self._state = np.empty(0, dtype=np.int8)
        self._parent = np.empty(0, dtype=np.int64)  # -1 = root
        self._difficulty = np.empty(0, dtype=np.float64)
        self._visits = np.empty(0, dtype=np.int32)
        self._hseq: list[int] = []  # seq of the prompt's live heap entries, -1 = none
        self._prompts: list = []
        self._answers: list = []

        self._cold: list[int] = []  # heap of ids = FIFO (ids grow with insertion)
        self._reset_heaps()
        self._arch_min: list = []  # (score, seq, id) of archived prompts
        self._n_arch = 0
        self._n_flight = 0
        self._seq = 0
        self._added = self._sampled = self._reported = self._evicted = 0

    # ------------------------------------------------------------------ basics
    def _reset_heaps(self) -> None:
        self._hard_max: list = []  # (-score, seq, id)
        self._hard_min: list = []  # (score, seq, id)
        self._easy_min: list = []
        self._easy_max: list = []
        self._n_hard = 0
        self._n_easy = 0

    def __len__(self) -> int:
        return len(self._cold) + self._n_hard + self._n_easy

    def _in_flight_count(self) -> int:
        return self._n_flight

    def _held(self) -> int:
        return len(self) + self._n_arch + self._n_flight

    def _grow(self, n: int) -> None:
        cap = self._score.shape[0]
        if n <= cap:
            return
        new = max(n, 2 * cap, 1024)
        for name, fill in (
            ("_score", _NAN),
            ("_state", EVICTED),
            ("_parent", -1),
            ("_difficulty", 1.0),
            ("_visits", 0),
        ):
            old = getattr(self, name)
            arr = np.full(new, fill, dtype=old.dtype)
            arr[:cap] = old
            setattr(self, name, arr)

    def _top(self, heap: list):
        """Live top entry of ``heap`` (stale entries are discarded), or None."""
        hseq = self._hseq
        while heap:
            e = heap[0]
            if hseq[e[2]] == e[1]:
                return e
            heappop(heap)
        return None

    def _compact(self) -> None:
        hseq = self._hseq
        for heap, live in (
            (self._hard_max, self._n_hard),
            (self._hard_min, self._n_hard),
            (self._easy_min, self._n_easy),
            (self._easy_max, self._n_easy),
            (self._arch_min, self._n_arch),
        ):
            if len(heap) > 2 * live + 4096:
                heap[:] = [e for e in heap if hseq[e[2]] == e[1]]
                heap.sort()  # a sorted list is a heap

    # -------------------------------------------------------- side bookkeeping
    def _push_side(self, i: int, s: float, easy: bool) -> None:
        seq = self._seq
        self._seq = seq + 1
        self._hseq[i] = seq
        if easy:
            heappush(self._easy_min, (s, seq, i))
            heappush(self._easy_max, (-s, seq, i))
            self._n_easy += 1
            self._state[i] = EASY
        else:
            heappush(self._hard_max, (-s, seq, i))
            heappush(self._hard_min, (s, seq, i))
            self._n_hard += 1
            self._state[i] = HARD

    def _route(self, i: int, s: float) -> None:
        """Insert a scored prompt on the side that keeps max(hard) <= min(easy)."""
        e = self._top(self._easy_min)
        self._push_side(i, s, e is not None and s > e[0])

    def _pop_hard_max(self) -> int:
        e = self._top(self._hard_max)
        heappop(self._hard_max)
        self._hseq[e[2]] = -1
        self._n_hard -= 1
        return e[2]

    def _pop_easy_min(self) -> int:
        e = self._top(self._easy_min)
        heappop(self._easy_min)
        self._hseq[e[2]] = -1
        self._n_easy -= 1
        return e[2]

    def _pop_easy_max(self) -> int:
        e = self._top(self._easy_max)
        heappop(self._easy_max)
        self._hseq[e[2]] = -1
        self._n_easy -= 1
        return e[2]

    def _rebalance(self) -> None:
        target = target_hard(self._n_hard + self._n_easy, self.low_fraction)
        score = self._score
        while self._n_hard > target:
            i = self._pop_hard_max()
            self._push_side(i, float(score[i]), True)
        while self._n_hard < target:
            i = self._pop_easy_min()
            self._push_side(i, float(score[i]), False)
        self._compact()

    def _rebuild_sides(self) -> None:
        """Bulk (re)build of both sides from the state column: sort once, no pushes."""
        n = self._n
        st = self._state[:n]
        ids = np.flatnonzero((st == HARD) | (st == EASY))
        order = np.lexsort((ids, self._score[ids]))
        ids = ids[order]
        scores = self._score[ids]
        t = target_hard(ids.shape[0], self.low_fraction)
        self._state[ids[:t]] = HARD
        self._state[ids[t:]] = EASY
        seq0 = self._seq
        self._seq += ids.shape[0]
        id_list = ids.tolist()
        s_list = scores.tolist()
        seqs = range(seq0, seq0 + len(id_list))
        hseq = self._hseq
        for i, q in zip(id_list, seqs, strict=True):
            hseq[i] = q
        entries = list(zip(s_list, seqs, id_list, strict=True))  # ascending = valid min-heap
        self._hard_min = entries[:t]
        self._easy_min = entries[t:]
        self._hard_max = _max_heap(self._hard_min)
        self._easy_max = _max_heap(self._easy_min)
        self._n_hard = t
        self._n_easy = len(id_list) - t

    def _insert_scored(self, ids: np.ndarray) -> None:
        """Put prompts (score set, state not yet a side) on the heaps."""
        if ids.shape[0] == 0:
            return
        if ids.shape[0] > self._n_hard + self._n_easy:
            self._state[ids] = HARD  # mark as live-scored; the rebuild splits
            self._rebuild_sides()
            return
        score = self._score
        for i in ids.tolist():
            self._route(i, score[i].item())
        self._rebalance()

    # -------------------------------------------------------------- eviction
    def _evict(self, count: int) -> None:
        hseq = self._hseq
        state = self._state
        for _ in range(count):
            best = None
            best_heap = None
            for heap in (self._hard_min, self._easy_min, self._arch_min):
                e = self._top(heap)
                if e is not None and (best is None or e < best):
                    best, best_heap = e, heap
            if best is not None:
                heappop(best_heap)
                i = best[2]
                hseq[i] = -1
                st = state[i]
                if st == HARD:
                    self._n_hard -= 1
                elif st == EASY:
                    self._n_easy -= 1
                else:
                    self._n_arch -= 1
            elif self._cold:
                i = heappop(self._cold)
            else:  # pragma: no cover - guarded by the capacity check in add
                raise CapacityError("nothing left to evict")
            state[i] = EVICTED
            self._prompts[i] = None
            self._answers[i] = None
            self._evicted += 1

    # ------------------------------------------------------------------- add
    def add(self, prompts, answers=None, rewards=None, metadata=None, parents=None, difficulty=None) -> np.ndarray:
        n = len(prompts)
        if answers is not None and len(answers) != n:
            raise ValueError("answers and prompts differ in length")
        if n and self._n_flight >= self.capacity:
            raise CapacityError(f"cannot add {n} prompts: all {self.capacity} slots are in flight")
        score = np.full(n, _NAN) if rewards is None else to_score(rewards, self.reward_range)
        if score.shape != (n,):
            raise ValueError("rewards and prompts differ in length")
        d = clamp_difficulty(difficulty, n)
        par = np.full(n, -1, dtype=np.int64)
        if parents is not None:
            p = np.asarray(parents, dtype=np.uint64)
            if p.shape != (n,):
                raise ValueError("parents and prompts differ in length")
            has = p != NO_PARENT
            pi = p[has].astype(np.int64)
            if pi.size and (pi.max() >= self._n or np.any(self._state[pi] == EVICTED)):
                raise KeyError("unknown or evicted parent id")
            par[has] = pi
            est = has & np.isnan(score)
            if est.any():
                ps = self._score[par[est]]
                score[est] = np.where(np.isfinite(ps), child_estimate(ps, d[est]), _NAN)

        start = self._n
        self._grow(start + n)
        sl = slice(start, start + n)
        self._score[sl] = score
        self._parent[sl] = par
        self._difficulty[sl] = d
        self._visits[sl] = 0
        scored = np.isfinite(score)
        self._state[sl] = COLD  # scored ones get a side in _insert_scored
        self._prompts.extend(prompts)
        self._answers.extend([None] * n if answers is None else answers)
        self._hseq.extend([-1] * n)
        self._n = start + n
        self._added += n

        ids = np.arange(start, start + n, dtype=np.int64)
        self._cold.extend(ids[~scored].tolist())  # larger than every queued id: still a heap
        self._insert_scored(ids[scored])
        over = self._held() - self.capacity
        if over > 0:
            self._evict(over)
            self._rebalance()
        return ids.astype(np.uint64)

    # ---------------------------------------------------------------- sample
    def sample(self, k: int) -> np.ndarray:
        if k < 0:
            raise ValueError("k must be >= 0")
        if self.reinsert == "on_drain" and len(self) < k and self._n_arch:
            self._reinsert_archive()
        out: list[int] = []
        cold = self._cold
        for _ in range(min(k, len(cold))):
            out.append(heappop(cold))
        need = k - len(out)
        n_scored = self._n_hard + self._n_easy
        if need > 0 and n_scored:
            if need >= n_scored:
                out.extend(self._take_all_scored())
            elif self.sampling == "medium":
                out.extend(self._sample_medium(need))
            elif self.sampling == "mixed":
                easy = need // 2
                for _ in range(easy):
                    out.append(self._pop_easy_max() if self._n_easy else self._pop_hard_max())
                if need - easy:
                    out.extend(self._sample_medium(need - easy))
            else:
                out.extend(self._sample_numpy(need))
            self._rebalance()
        ids = np.array(out, dtype=np.int64)
        self._state[ids] = IN_FLIGHT
        self._n_flight += len(out)
        self._sampled += len(out)
        return ids.astype(np.uint64)

    def _sample_medium(self, need: int) -> list[int]:
        """Pop the 2*need prompts nearest the boundary (alternating, easy side first),
        keep ``need`` of them uniformly at random and push the rest back."""
        take = min(2 * need, self._n_hard + self._n_easy)
        cands: list[int] = []
        sides: list[bool] = []
        easy_turn = True
        for _ in range(take):
            if (easy_turn and self._n_easy) or not self._n_hard:
                cands.append(self._pop_easy_min())
                sides.append(True)
            else:
                cands.append(self._pop_hard_max())
                sides.append(False)
            easy_turn = not easy_turn
        keep = np.zeros(take, dtype=bool)
        keep[self._rng.choice(take, size=need, replace=False)] = True
        score = self._score
        chosen = []
        for j, i in enumerate(cands):
            if keep[j]:
                chosen.append(i)
            else:
                self._push_side(i, score[i].item(), sides[j])
        return chosen

    def _sample_numpy(self, need: int) -> list[int]:
        """Uniform / prioritized: one vectorised O(n) pass over the state column."""
        st = self._state[: self._n]
        live = np.flatnonzero((st == HARD) | (st == EASY))
        if self.sampling == "uniform":
            chosen = self._rng.choice(live, size=need, replace=False)
        else:  # prioritized: w = ((1 - p) + eps)^(1/tau), Efraimidis-Spirakis keys
            p = (self._score[live] + 1.0) * 0.5
            w = ((1.0 - p) + self.epsilon) ** (1.0 / self.temperature)
            keys = np.log(self._rng.random(live.shape[0])) / w
            chosen = live[np.argpartition(-keys, need - 1)[:need]]
        n_hard = int(np.count_nonzero(st[chosen] == HARD))
        self._n_hard -= n_hard
        self._n_easy -= chosen.shape[0] - n_hard
        out = chosen.tolist()
        hseq = self._hseq
        for i in out:
            hseq[i] = -1
        return out

    def _take_all_scored(self) -> list[int]:
        st = self._state[: self._n]
        ids = np.flatnonzero((st == HARD) | (st == EASY)).tolist()
        hseq = self._hseq
        for i in ids:
            hseq[i] = -1
        self._reset_heaps()
        return ids

    # -------------------------------------------------------- report/release
    def _check_in_flight(self, ids) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim != 1:
            raise ValueError("ids must be one-dimensional")
        if ids.size:
            if ids.min() < 0 or ids.max() >= self._n:
                raise KeyError("unknown prompt id")
            if np.any(self._state[ids] != IN_FLIGHT):
                raise KeyError(f"prompt {int(ids[self._state[ids] != IN_FLIGHT][0])} is not in flight")
            if np.unique(ids).shape[0] != ids.shape[0]:
                raise ValueError("duplicate ids")
        return ids

    def report(self, ids, rewards, n_rollouts=None, n_correct=None, step=None) -> None:
        ids = self._check_in_flight(ids)
        s = to_score(rewards, self.reward_range)
        if s.shape != ids.shape:
            raise ValueError("ids and rewards differ in length")
        self._score[ids] = s
        self._visits[ids] += 1
        self._n_flight -= ids.shape[0]
        self._reported += ids.shape[0]
        if self.reinsert == "immediate":
            self._state[ids] = COLD
            self._insert_scored(ids)
            return
        self._state[ids] = ARCHIVED
        seq0 = self._seq
        self._seq += ids.shape[0]
        hseq = self._hseq
        arch = self._arch_min
        for q, i, v in zip(range(seq0, self._seq), ids.tolist(), s.tolist(), strict=True):
            hseq[i] = q
            heappush(arch, (v, q, i))
        self._n_arch += ids.shape[0]

    def release(self, ids) -> None:
        ids = self._check_in_flight(ids)
        self._n_flight -= ids.shape[0]
        scored = np.isfinite(self._score[ids])
        self._state[ids] = COLD
        for i in ids[~scored].tolist():
            heappush(self._cold, i)  # back at its place in the FIFO
        self._insert_scored(ids[scored])

    def _reinsert_archive(self) -> None:
        if self.refresh_mode:
            self.refresh(mode=self.refresh_mode)
        ids = np.flatnonzero(self._state[: self._n] == ARCHIVED)
        self._rng.shuffle(ids)
        hseq = self._hseq
        for i in ids.tolist():
            hseq[i] = -1
        self._arch_min = []
        self._n_arch = 0
        self._state[ids] = COLD
        self._insert_scored(ids)

    # --------------------------------------------------------------- lineage
    def refresh(self, mode="path", temperature=1.0, blend=0.5, direction="reference", scope="archive") -> int:
        """Topology-aware re-estimation over the whole forest; returns #prompts updated."""
        check_refresh_args(mode, scope)
        n = self._n
        state = self._state[:n]
        # evicted prompts leave the forest; their children become roots
        parent = np.where(state == EVICTED, -1, self._parent[:n])
        has_parent = parent >= 0
        parent[has_parent] = np.where(state[parent[has_parent]] == EVICTED, -1, parent[has_parent])
        a = self._score[:n].copy()
        a[state == EVICTED] = _NAN
        depth = _depths(parent)
        max_depth = int(depth.max()) if n else 0
        if max_depth == 0:
            return 0
        args = (parent, a, self._difficulty[:n], mode, float(temperature), float(blend), direction)
        if max_depth > 4096 and max_depth * 64 > n:
            v, refreshed = _refresh_loop(*args)
        else:
            v, refreshed = _refresh_levels(depth, max_depth, *args)
        refreshed &= np.isfinite(a)  # only prompts that already have a score are rewritten
        if scope == "archive":
            refreshed &= state == ARCHIVED
        else:
            refreshed &= (state == ARCHIVED) | (state == HARD) | (state == EASY)
        upd = np.flatnonzero(refreshed)
        self._score[upd] = v[upd]
        # re-key: archived prompts get a fresh archive-heap entry
        arch = upd[state[upd] == ARCHIVED]
        seq0 = self._seq
        self._seq += arch.shape[0]
        hseq = self._hseq
        for q, i, s in zip(range(seq0, self._seq), arch.tolist(), v[arch].tolist(), strict=True):
            hseq[i] = q
            heappush(self._arch_min, (s, q, i))
        live = upd[(state[upd] == HARD) | (state[upd] == EASY)]
        if live.shape[0] * 4 > self._n_hard + self._n_easy:
            self._rebuild_sides()
        elif live.shape[0]:
            n_hard = int(np.count_nonzero(state[live] == HARD))
            self._n_hard -= n_hard
            self._n_easy -= live.shape[0] - n_hard
            for i in live.tolist():
                hseq[i] = -1
            self._state[live] = COLD
            self._insert_scored(live)
        self._compact()
        return int(upd.shape[0])

    # ----------------------------------------------------------- persistence
    def save(self, path) -> None:
        n = self._n
        state = {
            "config": {
                "capacity": self.capacity,
                "low_fraction": self.low_fraction,
                "sampling": self.sampling,
                "reward_range": self.reward_range,
                "reinsert": self.reinsert,
                "refresh": self.refresh_mode,
                "inbox_capacity": self.inbox.capacity,
                "epsilon": self.epsilon,
                "temperature": self.temperature,
            },
            "columns": {
                "score": self._score[:n],
                "state": self._state[:n],
                "parent": self._parent[:n],
                "difficulty": self._difficulty[:n],
                "visits": self._visits[:n],
                "hseq": np.array(self._hseq, dtype=np.int64),
            },
            "seq": self._seq,
            "prompts": self._prompts,
            "answers": self._answers,
            "cold": np.array(self._cold, dtype=np.int64),
            "counters": (self._added, self._sampled, self._reported, self._evicted),
            "rng": self._rng.bit_generator.state,
            "inbox": self.inbox,
        }
        with open(path, "wb") as f:
            pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def load(cls, path) -> BestPythonPool:
        with open(path, "rb") as f:
            state = pickle.load(f)
        pool = cls(**state["config"])
        cols = state["columns"]
        n = cols["score"].shape[0]
        pool._grow(n)
        pool._n = n
        hseq = cols.pop("hseq")
        for name, arr in cols.items():
            getattr(pool, "_" + name)[:n] = arr
        pool._hseq = hseq.tolist()
        pool._seq = state["seq"]
        pool._prompts = state["prompts"]
        pool._answers = state["answers"]
        pool._cold = np.sort(state["cold"]).tolist()
        pool._added, pool._sampled, pool._reported, pool._evicted = state["counters"]
        pool._rng.bit_generator.state = state["rng"]
        pool.inbox = state["inbox"]
        # Rebuild the heaps from the saved sides and sequence numbers: heap
        # pops depend only on the (key, seq) set, so behaviour is unchanged.
        st = pool._state[:n]
        pool._n_flight = int(np.count_nonzero(st == IN_FLIGHT))
        heaps = {}
        for side in (HARD, EASY, ARCHIVED):
            ids = np.flatnonzero(st == side)
            ids = ids[np.lexsort((hseq[ids], pool._score[ids]))]
            heaps[side] = list(zip(pool._score[ids].tolist(), hseq[ids].tolist(), ids.tolist(), strict=True))
        pool._hard_min, pool._easy_min, pool._arch_min = heaps[HARD], heaps[EASY], heaps[ARCHIVED]
        pool._hard_max = _max_heap(heaps[HARD])
        pool._easy_max = _max_heap(heaps[EASY])
        pool._n_hard, pool._n_easy, pool._n_arch = len(heaps[HARD]), len(heaps[EASY]), len(heaps[ARCHIVED])
        return pool

    # ---------------------------------------------------------------- stats
    def records(self, ids) -> dict:
        """Per-prompt view for tests: user-scale score (nan = unscored) and state."""
        ids = np.asarray(ids, dtype=np.int64)
        return {
            "score": from_score(self._score[ids], self.reward_range),
            "state": np.array([_STATE_NAMES[s] for s in self._state[ids].tolist()]),
        }

    def stats(self) -> dict:
        return {
            "size": len(self),
            "cold": len(self._cold),
            "hard": self._n_hard,
            "easy": self._n_easy,
            "in_flight": self._n_flight,
            "archived": self._n_arch,
            "held": self._held(),
            "evicted": self._evicted,
            "added": self._added,
            "sampled": self._sampled,
            "reported": self._reported,
            "inbox": len(self.inbox),
            "memory_bytes": None,  # no engine accounting in pure Python; use RSS
        }


def _max_heap(entries: list) -> list:
    """Max-heap twin of a list of (score, seq, id) entries."""
    heap = [(-s, q, i) for s, q, i in entries]
    heapify(heap)  # not just reversed: equal scores must still pop in seq order
    return heap


# ---------------------------------------------------------------------------
# lineage passes (module level so tests can call them directly)


def _depths(parent: np.ndarray) -> np.ndarray:
    """Number of ancestors of every node, by pointer jumping (O(n log depth))."""
    depth = (parent >= 0).astype(np.int64)
    jump = parent.copy()
    active = np.flatnonzero(jump >= 0)
    while active.size:
        j = jump[active]
        depth[active] += depth[j]
        jump[active] = jump[j]
        active = active[jump[active] >= 0]
    return depth


def _refresh_levels(depth, max_depth, parent, a, diff, mode, temperature, blend, direction):
    """Bottom-up pass, one vectorised step per depth level."""
    n = parent.shape[0]
    order = np.argsort(depth, kind="stable")
    bounds = np.searchsorted(depth[order], np.arange(max_depth + 2))
    v = a.copy()
    refreshed = np.zeros(n, dtype=bool)
    has_child = np.zeros(n, dtype=bool)
    ell = np.ones(n)
    ell_sum = np.zeros(n)
    num = np.zeros(n)
    den = np.zeros(n)
    inv_t = 1.0 / temperature
    for d in range(max_depth, -1, -1):
        nodes = order[bounds[d] : bounds[d + 1]]
        internal = nodes[has_child[nodes]]
        if internal.size:
            ell[internal] = ell_sum[internal]
            agg = internal[den[internal] > 0]
            m = num[agg] / den[agg]
            av = a[agg]
            v[agg] = np.clip(np.where(np.isfinite(av), blend * av + (1.0 - blend) * m, m), -1.0, 1.0)
            refreshed[agg] = True
        if d == 0:
            break
        p = parent[nodes]
        has_child[p] = True
        np.add.at(ell_sum, p, ell[nodes])
        valued = nodes[np.isfinite(v[nodes])]
        w = ell[valued] ** inv_t if mode == "path" else np.ones(valued.shape[0])
        g = adjust(v[valued], diff[valued], direction)
        np.add.at(num, parent[valued], w * g)
        np.add.at(den, parent[valued], w)
    return v, refreshed


def _refresh_loop(parent, a, diff, mode, temperature, blend, direction):
    """Same pass as a plain loop in reverse insertion order (children are newer
    than their parents), for forests too deep for per-level numpy calls."""
    n = parent.shape[0]
    par = parent.tolist()
    v = a.tolist()
    dl = diff.tolist()
    has_child = [False] * n
    ell = [1.0] * n
    ell_sum = [0.0] * n
    num = [0.0] * n
    den = [0.0] * n
    refreshed = np.zeros(n, dtype=bool)
    inv_t = 1.0 / temperature
    ref_dir = direction == "reference"
    path = mode == "path"
    for u in range(n - 1, -1, -1):
        if has_child[u]:
            ell[u] = ell_sum[u]
            if den[u] > 0:
                m = num[u] / den[u]
                au = v[u]
                x = blend * au + (1.0 - blend) * m if au == au else m
                v[u] = -1.0 if x < -1.0 else (1.0 if x > 1.0 else x)
                refreshed[u] = True
        p = par[u]
        if p >= 0:
            has_child[p] = True
            ell_sum[p] += ell[u]
            vu = v[u]
            if vu == vu:
                w = ell[u] ** inv_t if path else 1.0
                du = dl[u]
                g = (vu / du if vu >= 0 else vu * du) if ref_dir else (vu * du if vu >= 0 else vu / du)
                num[p] += w * g
                den[p] += w
    return np.array(v), refreshed
