//! `heapa._heapa`: thin PyO3 bindings over `heapa-core`.
//!
//! This crate only converts arguments (numpy arrays in, numpy arrays out),
//! maps errors (see `errors.rs`) and releases the GIL around O(n) work. The
//! friendly API (`heapa.Pool`) is Python on top of `PoolCore`.

mod errors;

use std::path::PathBuf;
use std::sync::Arc;

use heapa_core::config::{clamp_difficulty, RefreshParams};
use heapa_core::{
    payload, Boundary, Config, Direction, Eviction, Inbox, InboxItem, NewPrompt, Pool, RefreshMode,
    Reinsert, Sampling, Scope, Stat, State,
};
use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use errors::{invalid, IntoPyResult};

type Ids<'py> = PyReadonlyArray1<'py, u64>;

fn slice<'a, T: numpy::Element>(a: &'a PyReadonlyArray1<'_, T>, name: &str) -> PyResult<&'a [T]> {
    a.as_slice()
        .map_err(|_| invalid(format!("{name}: expected a contiguous 1-D array")))
}

fn check_len(name: &str, got: usize, n: usize) -> PyResult<()> {
    if got != n {
        return Err(invalid(format!(
            "{name}: expected length {n} (one per prompt), got {got}"
        )));
    }
    Ok(())
}

fn get<'py, T: FromPyObjectOwned<'py>>(d: &Bound<'py, PyDict>, k: &str, default: T) -> PyResult<T> {
    match d.get_item(k)? {
        Some(v) if !v.is_none() => v.extract::<T>().map_err(|e| {
            let e: PyErr = e.into();
            invalid(format!("{k}: {e}"))
        }),
        _ => Ok(default),
    }
}

fn parse_refresh(d: &Bound<'_, PyDict>) -> PyResult<RefreshParams> {
    let def = RefreshParams::default();
    Ok(RefreshParams {
        mode: RefreshMode::parse(&get(d, "mode", def.mode.name().to_string())?).py_err()?,
        temperature: get(d, "temperature", def.temperature)?,
        blend: get(d, "blend", def.blend)?,
        direction: Direction::parse(&get(d, "direction", def.direction.name().to_string())?)
            .py_err()?,
        scope: Scope::parse(&get(d, "scope", def.scope.name().to_string())?).py_err()?,
    })
}

/// Builds and validates a core config from a dict of `PoolConfig` fields.
fn parse_config(d: &Bound<'_, PyDict>) -> PyResult<Config> {
    let def = Config::default();
    let (lo, hi): (f64, f64) = get(d, "reward_range", (def.reward_lo, def.reward_hi))?;
    // The refresh knobs are parsed (and validated) even while the refresh is off.
    let on = d.get_item("refresh")?.filter(|v| !v.is_none());
    let p = PyDict::new(d.py());
    if let Some(v) = &on {
        p.set_item("mode", v)?;
    }
    for (k, name) in [
        ("refresh_temperature", "temperature"),
        ("refresh_blend", "blend"),
        ("refresh_direction", "direction"),
        ("refresh_scope", "scope"),
    ] {
        if let Some(x) = d.get_item(k)? {
            p.set_item(name, x)?;
        }
    }
    let refresh = parse_refresh(&p)?;
    let name = |k: &str, v: &str| get(d, k, v.to_string());
    let cfg = Config {
        capacity: get(d, "capacity", def.capacity)?,
        boundary: Boundary::parse(&name("boundary", def.boundary.name())?).py_err()?,
        low_fraction: get(d, "low_fraction", def.low_fraction)?,
        target: get(d, "target", def.target)?,
        sampling: Sampling::parse(&name("sampling", def.sampling.name())?).py_err()?,
        eviction: Eviction::parse(&name("eviction", def.eviction.name())?).py_err()?,
        reward_lo: lo,
        reward_hi: hi,
        stat: Stat::parse(&name("stat", def.stat.name())?).py_err()?,
        ema_alpha: get(d, "ema_alpha", def.ema_alpha)?,
        reinsert: Reinsert::parse(&name("reinsert", def.reinsert.name())?).py_err()?,
        drop_solved: get(d, "drop_solved", def.drop_solved)?,
        priority_epsilon: get(d, "priority_epsilon", def.priority_epsilon)?,
        priority_temperature: get(d, "priority_temperature", def.priority_temperature)?,
        refresh,
        refresh_on_reinsert: on.is_some(),
        inbox_capacity: get(d, "inbox_capacity", def.inbox_capacity)?,
        delay_steps: get(d, "delay_steps", def.delay_steps)?,
        revisit_fraction: get(d, "revisit_fraction", def.revisit_fraction)?,
        seed: get(d, "seed", def.seed)?,
    };
    cfg.validate().py_err()?;
    Ok(cfg)
}

fn config_dict<'py>(py: Python<'py>, c: &Config) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("capacity", c.capacity)?;
    d.set_item("boundary", c.boundary.name())?;
    d.set_item("low_fraction", c.low_fraction)?;
    d.set_item("target", c.target)?;
    d.set_item("sampling", c.sampling.name())?;
    d.set_item("eviction", c.eviction.name())?;
    d.set_item("reward_range", (c.reward_lo, c.reward_hi))?;
    d.set_item("stat", c.stat.name())?;
    d.set_item("ema_alpha", c.ema_alpha)?;
    d.set_item("reinsert", c.reinsert.name())?;
    d.set_item("drop_solved", c.drop_solved)?;
    d.set_item("priority_epsilon", c.priority_epsilon)?;
    d.set_item("priority_temperature", c.priority_temperature)?;
    let r = c.refresh;
    d.set_item("refresh", c.refresh_on_reinsert.then(|| r.mode.name()))?;
    d.set_item("refresh_temperature", r.temperature)?;
    d.set_item("refresh_blend", r.blend)?;
    d.set_item("refresh_direction", r.direction.name())?;
    d.set_item("refresh_scope", r.scope.name())?;
    d.set_item("inbox_capacity", c.inbox_capacity)?;
    d.set_item("delay_steps", c.delay_steps)?;
    d.set_item("revisit_fraction", c.revisit_fraction)?;
    d.set_item("seed", c.seed)?;
    Ok(d)
}

/// Validates and checks a config dict (used by `PoolConfig.__post_init__`).
#[pyfunction]
fn validate_config(config: &Bound<'_, PyDict>) -> PyResult<()> {
    parse_config(config).map(|_| ())
}

/// Encodes payloads and checks per-prompt optional columns.
fn encode_payloads(
    texts: &[String],
    answers: Option<&Vec<Option<String>>>,
    metadata: Option<&Vec<Option<Vec<u8>>>>,
) -> PyResult<Vec<Box<[u8]>>> {
    let n = texts.len();
    if let Some(a) = answers {
        check_len("answers", a.len(), n)?;
    }
    if let Some(m) = metadata {
        check_len("metadata", m.len(), n)?;
    }
    Ok((0..n)
        .map(|i| {
            let a = answers.and_then(|a| a[i].as_deref());
            let m = metadata.and_then(|m| m[i].as_deref());
            payload::encode(&texts[i], a, m)
        })
        .collect())
}

fn opt_col<'a, T: numpy::Element>(
    a: &'a Option<PyReadonlyArray1<'_, T>>,
    name: &str,
    n: usize,
) -> PyResult<Option<&'a [T]>> {
    match a {
        Some(a) => {
            let s = slice(a, name)?;
            check_len(name, s.len(), n)?;
            Ok(Some(s))
        }
        None => Ok(None),
    }
}

fn state_from_name(s: &str) -> PyResult<State> {
    Ok(match s {
        "cold" => State::Cold,
        "hard" => State::Hard,
        "easy" => State::Easy,
        "in_flight" => State::InFlight,
        "archived" => State::Archived,
        _ => {
            return Err(invalid(format!(
            "state: expected one of ['cold', 'hard', 'easy', 'in_flight', 'archived'], got {s:?}"
        )))
        }
    })
}

/// The engine object behind `heapa.Pool`. Thread-safe: one lock around the
/// pool, none around the inbox.
#[pyclass(frozen, module = "heapa._heapa")]
struct PoolCore {
    pool: Mutex<Pool>,
    inbox: Arc<Inbox>,
}

impl PoolCore {
    fn wrap(pool: Pool) -> PoolCore {
        PoolCore {
            inbox: Arc::clone(pool.inbox()),
            pool: Mutex::new(pool),
        }
    }
}

#[pymethods]
impl PoolCore {
    #[new]
    fn new(config: &Bound<'_, PyDict>) -> PyResult<Self> {
        Ok(PoolCore::wrap(Pool::new(parse_config(config)?).py_err()?))
    }

    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        config_dict(py, self.pool.lock().config())
    }

    #[pyo3(signature = (texts, answers=None, metadata=None, rewards=None, parents=None, difficulty=None))]
    #[allow(clippy::too_many_arguments)] // mirrors the Python signature
    fn add<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
        answers: Option<Vec<Option<String>>>,
        metadata: Option<Vec<Option<Vec<u8>>>>,
        rewards: Option<PyReadonlyArray1<'py, f64>>,
        parents: Option<PyReadonlyArray1<'py, u64>>,
        difficulty: Option<PyReadonlyArray1<'py, f64>>,
    ) -> PyResult<Bound<'py, PyArray1<u64>>> {
        let n = texts.len();
        let payloads = encode_payloads(&texts, answers.as_ref(), metadata.as_ref())?;
        let rewards = opt_col(&rewards, "rewards", n)?;
        let parents = opt_col(&parents, "parents", n)?;
        let difficulty = opt_col(&difficulty, "difficulty", n)?;
        let items: Vec<NewPrompt> = payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| NewPrompt {
                payload,
                reward: rewards.map(|r| r[i]),
                parent: parents.map(|p| p[i]),
                difficulty: difficulty.map(|d| d[i]),
            })
            .collect();
        let ids = py.detach(|| self.pool.lock().add(items)).py_err()?;
        Ok(ids.into_pyarray(py))
    }

    fn sample<'py>(&self, py: Python<'py>, k: i64) -> PyResult<Bound<'py, PyArray1<u64>>> {
        if k < 0 {
            return Err(invalid(format!(
                "k: expected a non-negative count, got {k}"
            )));
        }
        let ids = py.detach(|| self.pool.lock().sample(k as usize));
        Ok(ids.into_pyarray(py))
    }

    #[pyo3(signature = (ids, rewards, n_rollouts=None, n_correct=None, step=None))]
    fn report(
        &self,
        py: Python<'_>,
        ids: Ids<'_>,
        rewards: PyReadonlyArray1<'_, f64>,
        n_rollouts: Option<PyReadonlyArray1<'_, u32>>,
        n_correct: Option<PyReadonlyArray1<'_, u32>>,
        step: Option<i64>,
    ) -> PyResult<()> {
        let ids = slice(&ids, "ids")?;
        let rewards = slice(&rewards, "rewards")?;
        let n_rollouts = n_rollouts
            .as_ref()
            .map(|a| slice(a, "n_rollouts"))
            .transpose()?;
        let n_correct = n_correct
            .as_ref()
            .map(|a| slice(a, "n_correct"))
            .transpose()?;
        let step = match step {
            Some(s) if s < 0 => {
                return Err(invalid(format!(
                    "step: expected a non-negative integer, got {s}"
                )))
            }
            s => s.map(|s| s as u64),
        };
        py.detach(|| {
            self.pool
                .lock()
                .report(ids, rewards, n_rollouts, n_correct, step)
        })
        .py_err()
    }

    fn release(&self, py: Python<'_>, ids: Ids<'_>) -> PyResult<()> {
        let ids = slice(&ids, "ids")?;
        py.detach(|| self.pool.lock().release(ids)).py_err()
    }

    fn prompts<'py>(&self, py: Python<'py>, ids: Ids<'_>) -> PyResult<Bound<'py, PyList>> {
        let pool = self.pool.lock();
        let p = pool.payloads(slice(&ids, "ids")?).py_err()?;
        PyList::new(py, p.iter().map(|b| payload::text(b)))
    }

    fn answers<'py>(&self, py: Python<'py>, ids: Ids<'_>) -> PyResult<Bound<'py, PyList>> {
        let pool = self.pool.lock();
        let p = pool.payloads(slice(&ids, "ids")?).py_err()?;
        PyList::new(py, p.iter().map(|b| payload::answer(b)))
    }

    /// Raw metadata bytes (JSON) per id, `None` where absent.
    fn metadata_raw<'py>(&self, py: Python<'py>, ids: Ids<'_>) -> PyResult<Bound<'py, PyList>> {
        let pool = self.pool.lock();
        let p = pool.payloads(slice(&ids, "ids")?).py_err()?;
        PyList::new(
            py,
            p.iter()
                .map(|b| payload::metadata(b).map(|m| PyBytes::new(py, m))),
        )
    }

    fn records<'py>(&self, py: Python<'py>, ids: Ids<'_>) -> PyResult<Bound<'py, PyDict>> {
        let ids = slice(&ids, "ids")?;
        let r = py.detach(|| self.pool.lock().records(ids)).py_err()?;
        let d = PyDict::new(py);
        d.set_item("score", r.score.into_pyarray(py))?;
        d.set_item("visits", r.visits.into_pyarray(py))?;
        d.set_item("rollouts", r.rollouts.into_pyarray(py))?;
        d.set_item("correct", r.correct.into_pyarray(py))?;
        d.set_item("last_step", r.last_step.into_pyarray(py))?;
        d.set_item("state_code", r.state.into_pyarray(py))?;
        d.set_item("estimated", r.estimated.into_pyarray(py))?;
        d.set_item("parent", r.parent.into_pyarray(py))?;
        d.set_item("difficulty", r.difficulty.into_pyarray(py))?;
        Ok(d)
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.pool.lock().stats();
        let d = PyDict::new(py);
        let c = &s.counters;
        for (k, v) in [
            ("size", s.size),
            ("cold", s.cold),
            ("hard", s.hard),
            ("easy", s.easy),
            ("in_flight", s.in_flight),
            ("archived", s.archived),
            ("held", s.held),
            ("capacity", s.capacity),
            ("evicted", c.evicted),
            ("dropped", c.dropped),
            ("added", c.added),
            ("sampled", c.sampled),
            ("reported", c.reported),
            ("released", c.released),
            ("reinsertions", c.reinsertions),
            ("refreshes", c.refreshes),
            ("estimated", c.estimated),
            ("orphaned", c.orphaned),
            ("drained", c.drained),
            ("inbox_queued", s.inbox_queued),
            ("inbox_pushed", s.inbox_pushed),
            ("inbox_rejected", s.inbox_rejected),
            ("delayed", s.delayed),
            ("step", s.step),
            ("memory_bytes", s.memory_bytes),
            ("payload_bytes", s.payload_bytes),
        ] {
            d.set_item(k, v)?;
        }
        d.set_item("boundary", s.boundary)?;
        Ok(d)
    }

    /// All ids in one partition (cold FIFO; hard/easy/archived hardest first).
    fn ids<'py>(&self, py: Python<'py>, state: &str) -> PyResult<Bound<'py, PyArray1<u64>>> {
        let st = state_from_name(state)?;
        let ids = py.detach(|| self.pool.lock().ids_in(st));
        Ok(ids.into_pyarray(py))
    }

    #[pyo3(signature = (mode="path", temperature=1.0, blend=0.5, direction="reference", scope="archive"))]
    fn refresh(
        &self,
        py: Python<'_>,
        mode: &str,
        temperature: f64,
        blend: f64,
        direction: &str,
        scope: &str,
    ) -> PyResult<usize> {
        let p = RefreshParams {
            mode: RefreshMode::parse(mode).py_err()?,
            temperature,
            blend,
            direction: Direction::parse(direction).py_err()?,
            scope: Scope::parse(scope).py_err()?,
        };
        p.validate().py_err()?;
        Ok(py.detach(|| self.pool.lock().refresh(&p)))
    }

    fn lineage<'py>(&self, py: Python<'py>, ids: Ids<'_>) -> PyResult<Bound<'py, PyDict>> {
        let ids = slice(&ids, "ids")?;
        let l = py.detach(|| self.pool.lock().lineage(ids)).py_err()?;
        let d = PyDict::new(py);
        d.set_item("parent", l.parent.into_pyarray(py))?;
        d.set_item("depth", l.depth.into_pyarray(py))?;
        d.set_item("n_children", l.n_children.into_pyarray(py))?;
        d.set_item("n_leaves", l.n_leaves.into_pyarray(py))?;
        Ok(d)
    }

    /// Pushes validated queries to the lock-free inbox (never takes the pool
    /// lock). Returns how many were accepted.
    #[pyo3(signature = (texts, answers=None, parents=None, difficulty=None, metadata=None))]
    fn inbox_push(
        &self,
        py: Python<'_>,
        texts: Vec<String>,
        answers: Option<Vec<Option<String>>>,
        parents: Option<PyReadonlyArray1<'_, u64>>,
        difficulty: Option<PyReadonlyArray1<'_, f64>>,
        metadata: Option<Vec<Option<Vec<u8>>>>,
    ) -> PyResult<usize> {
        let n = texts.len();
        let payloads = encode_payloads(&texts, answers.as_ref(), metadata.as_ref())?;
        let parents = opt_col(&parents, "parents", n)?;
        let difficulty = opt_col(&difficulty, "difficulty", n)?;
        if let Some(d) = difficulty {
            if let Some(i) = d.iter().position(|x| !x.is_finite() || *x <= 0.0) {
                return Err(invalid(format!(
                    "difficulty[{i}] = {}: expected a finite value > 0",
                    d[i]
                )));
            }
        }
        let items: Vec<InboxItem> = payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| InboxItem {
                payload,
                parent: parents.map(|p| p[i]),
                difficulty: difficulty.map(|d| clamp_difficulty(d[i])),
            })
            .collect();
        let inbox = Arc::clone(&self.inbox);
        Ok(py.detach(move || inbox.push_batch(items)))
    }

    fn inbox_len(&self) -> usize {
        self.inbox.len()
    }

    fn inbox_capacity(&self) -> usize {
        self.inbox.capacity()
    }

    #[pyo3(signature = (max=None, step=None))]
    fn drain_inbox<'py>(
        &self,
        py: Python<'py>,
        max: Option<i64>,
        step: Option<i64>,
    ) -> PyResult<Bound<'py, PyArray1<u64>>> {
        if let Some(m) = max.filter(|&m| m < 0) {
            return Err(invalid(format!(
                "max: expected a non-negative count, got {m}"
            )));
        }
        if let Some(s) = step.filter(|&s| s < 0) {
            return Err(invalid(format!(
                "step: expected a non-negative integer, got {s}"
            )));
        }
        let ids = py.detach(|| {
            self.pool
                .lock()
                .drain_inbox(max.map(|m| m as usize), step.map(|s| s as u64))
        });
        Ok(ids.into_pyarray(py))
    }

    fn fingerprint(&self, py: Python<'_>) -> u64 {
        py.detach(|| self.pool.lock().fingerprint())
    }

    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        py.detach(|| self.pool.lock().save(&path)).py_err()
    }

    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let pool = py.detach(|| Pool::load(&path)).py_err()?;
        Ok(PoolCore::wrap(pool))
    }

    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let b = py.detach(|| self.pool.lock().to_bytes());
        PyBytes::new(py, &b)
    }

    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: &[u8]) -> PyResult<Self> {
        let pool = py.detach(|| Pool::from_bytes(data)).py_err()?;
        Ok(PoolCore::wrap(pool))
    }

    fn __len__(&self) -> usize {
        self.pool.lock().held() as usize
    }
}

#[pymodule(gil_used = false)]
fn _heapa(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PoolCore>()?;
    m.add_function(wrap_pyfunction!(validate_config, m)?)?;
    m.add("NO_PARENT", heapa_core::NO_PARENT)?;
    m.add("SNAPSHOT_VERSION", heapa_core::snapshot::FORMAT_VERSION)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
