//! `heapa._heapa`: thin PyO3 bindings over `heapa-core`.
//!
//! This crate only converts arguments (numpy arrays in, numpy arrays out),
//! maps errors (see `errors.rs`) and releases the GIL around O(n) work. The
//! friendly API (`heapa.Pool`) is Python on top of `PoolCore`.

mod convert;
mod errors;

use std::path::PathBuf;
use std::sync::Arc;

use heapa_core::config::RefreshParams;
use heapa_core::{payload, Config, Direction, Inbox, NewPrompt, Pool, RefreshMode, Scope, State};
use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use convert::{check_len, column, opt_column};
use errors::{invalid, IntoPyResult};

type Ids<'py> = PyReadonlyArray1<'py, u64>;

/// Builds and validates a core config from a dict of `PoolConfig` fields
/// (absent fields take their defaults; unknown names are an error).
fn parse_config(d: &Bound<'_, PyDict>) -> PyResult<Config> {
    let mut cfg = Config::default();
    for (k, v) in d.iter() {
        let name = convert::name_arg(&k, "config field")?;
        cfg.set(&name, convert::config_value(&v, &name)?).py_err()?;
    }
    cfg.validate().py_err()?;
    Ok(cfg)
}

fn config_dict<'py>(py: Python<'py>, c: &Config) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (name, v) in c.values() {
        d.set_item(name, convert::config_object(py, v)?)?;
    }
    Ok(d)
}

/// Validates and checks a config dict (used by `PoolConfig.__post_init__`).
#[pyfunction]
fn validate_config(config: &Bound<'_, PyDict>) -> PyResult<()> {
    parse_config(config).map(|_| ())
}

/// Prompts, answers and metadata from Python, checked and encoded straight
/// from the Python strings (no intermediate owned copies).
fn payloads_from(
    prompts: &Bound<'_, PyAny>,
    answers: Option<&Bound<'_, PyAny>>,
    metadata: Option<&Bound<'_, PyAny>>,
) -> PyResult<Vec<Box<[u8]>>> {
    let texts = convert::items(prompts, "prompts")?;
    let n = texts.len();
    let answers = answers
        .filter(|a| !a.is_none())
        .map(|a| convert::items(a, "answers"))
        .transpose()?;
    let metadata = convert::opt_bytes(metadata, "metadata")?;
    if let Some(a) = &answers {
        check_len("answers", a.len(), n)?;
    }
    if let Some(m) = &metadata {
        check_len("metadata", m.len(), n)?;
    }
    let mut out = Vec::with_capacity(n);
    for (i, t) in texts.iter().enumerate() {
        let text = convert::text(t, || format!("prompts[{i}]"))?;
        let answer = match answers.as_ref().map(|a| &a[i]).filter(|a| !a.is_none()) {
            Some(a) => Some(convert::text(a, || format!("answers[{i}]"))?),
            None => None,
        };
        let meta = metadata.as_ref().and_then(|m| m[i].as_deref());
        out.push(payload::encode(text, answer, meta));
    }
    Ok(out)
}

fn state_from_name(v: &Bound<'_, PyAny>) -> PyResult<State> {
    State::parse(&convert::name_arg(v, "state")?).py_err()
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

    #[pyo3(signature = (prompts, answers=None, rewards=None, metadata=None, parents=None, difficulty=None, groups=None, priors=None, confidences=None))]
    #[allow(clippy::too_many_arguments)] // mirrors the Python signature
    fn add<'py>(
        &self,
        py: Python<'py>,
        prompts: &Bound<'py, PyAny>,
        answers: Option<&Bound<'py, PyAny>>,
        rewards: Option<PyReadonlyArray1<'py, f64>>,
        metadata: Option<&Bound<'py, PyAny>>,
        parents: Option<PyReadonlyArray1<'py, u64>>,
        difficulty: Option<PyReadonlyArray1<'py, f64>>,
        groups: Option<&Bound<'py, PyAny>>,
        priors: Option<PyReadonlyArray1<'py, f64>>,
        confidences: Option<PyReadonlyArray1<'py, f64>>,
    ) -> PyResult<Bound<'py, PyArray1<u64>>> {
        let payloads = payloads_from(prompts, answers, metadata)?;
        let n = payloads.len();
        let rewards = opt_column(rewards, "rewards", n)?;
        let parents = opt_column(parents, "parents", n)?;
        let difficulty = opt_column(difficulty, "difficulty", n)?;
        let priors = opt_column(priors, "prior", n)?;
        let confidences = opt_column(confidences, "confidence", n)?;
        let mut groups = match groups {
            Some(g) => {
                let v = convert::opt_texts(g, "group")?;
                check_len("group", v.len(), n)?;
                v
            }
            None => Vec::new(),
        };
        groups.resize(n, None);
        let nan_free = |v: Option<f64>| v.filter(|x| !x.is_nan());
        let items: Vec<NewPrompt> = payloads
            .into_iter()
            .zip(groups)
            .enumerate()
            .map(|(i, (payload, group))| NewPrompt {
                payload,
                reward: rewards.as_ref().map(|r| r[i]),
                parent: parents.as_ref().map(|p| p[i]),
                difficulty: difficulty.as_ref().map(|d| d[i]),
                group,
                // NaN marks "no prior" for this prompt.
                prior: nan_free(priors.as_ref().map(|p| p[i])),
                confidence: nan_free(confidences.as_ref().map(|c| c[i])),
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
        // Owned copies: the engine validates and applies the same values.
        let ids = column(&ids, "ids")?;
        let rewards = column(&rewards, "rewards")?;
        let n_rollouts = n_rollouts.map(|a| column(&a, "n_rollouts")).transpose()?;
        let n_correct = n_correct.map(|a| column(&a, "n_correct")).transpose()?;
        let step = match step {
            Some(s) if s < 0 => {
                return Err(invalid(format!(
                    "step: expected a non-negative integer, got {s}"
                )))
            }
            s => s.map(|s| s as u64),
        };
        py.detach(|| {
            self.pool.lock().report(
                &ids,
                &rewards,
                n_rollouts.as_deref(),
                n_correct.as_deref(),
                step,
            )
        })
        .py_err()
    }

    fn release(&self, py: Python<'_>, ids: Ids<'_>) -> PyResult<()> {
        let ids = column(&ids, "ids")?;
        py.detach(|| self.pool.lock().release(&ids)).py_err()
    }

    fn prompts<'py>(&self, py: Python<'py>, ids: Ids<'_>) -> PyResult<Bound<'py, PyList>> {
        let pool = self.pool.lock();
        let p = pool.payloads(&column(&ids, "ids")?).py_err()?;
        PyList::new(py, p.iter().map(|b| payload::text(b)))
    }

    fn answers<'py>(&self, py: Python<'py>, ids: Ids<'_>) -> PyResult<Bound<'py, PyList>> {
        let pool = self.pool.lock();
        let p = pool.payloads(&column(&ids, "ids")?).py_err()?;
        PyList::new(py, p.iter().map(|b| payload::answer(b)))
    }

    /// Raw metadata bytes (JSON) per id, `None` where absent.
    fn metadata_raw<'py>(&self, py: Python<'py>, ids: Ids<'_>) -> PyResult<Bound<'py, PyList>> {
        let pool = self.pool.lock();
        let p = pool.payloads(&column(&ids, "ids")?).py_err()?;
        PyList::new(
            py,
            p.iter()
                .map(|b| payload::metadata(b).map(|m| PyBytes::new(py, m))),
        )
    }

    fn records<'py>(&self, py: Python<'py>, ids: Ids<'_>) -> PyResult<Bound<'py, PyDict>> {
        let ids = column(&ids, "ids")?;
        let r = py.detach(|| self.pool.lock().records(&ids)).py_err()?;
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

    /// Per group: key, observations, observed pass rate, estimate.
    fn groups<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let rows = self.pool.lock().groups();
        PyList::new(py, rows)
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
    fn ids<'py>(
        &self,
        py: Python<'py>,
        state: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<u64>>> {
        let st = state_from_name(state)?;
        let ids = py.detach(|| self.pool.lock().ids_in(st));
        Ok(ids.into_pyarray(py))
    }

    fn refresh(
        &self,
        py: Python<'_>,
        mode: &Bound<'_, PyAny>,
        temperature: &Bound<'_, PyAny>,
        blend: &Bound<'_, PyAny>,
        direction: &Bound<'_, PyAny>,
        scope: &Bound<'_, PyAny>,
    ) -> PyResult<usize> {
        let name = convert::name_arg;
        let num = convert::float_arg;
        let p = RefreshParams {
            mode: RefreshMode::parse(&name(mode, "mode")?).py_err()?,
            temperature: num(temperature, "temperature")?,
            blend: num(blend, "blend")?,
            direction: Direction::parse(&name(direction, "direction")?).py_err()?,
            scope: Scope::parse(&name(scope, "scope")?).py_err()?,
        };
        p.validate().py_err()?;
        Ok(py.detach(|| self.pool.lock().refresh(&p)))
    }

    fn lineage<'py>(&self, py: Python<'py>, ids: Ids<'_>) -> PyResult<Bound<'py, PyDict>> {
        let ids = column(&ids, "ids")?;
        let l = py.detach(|| self.pool.lock().lineage(&ids)).py_err()?;
        let d = PyDict::new(py);
        d.set_item("parent", l.parent.into_pyarray(py))?;
        d.set_item("depth", l.depth.into_pyarray(py))?;
        d.set_item("n_children", l.n_children.into_pyarray(py))?;
        d.set_item("n_leaves", l.n_leaves.into_pyarray(py))?;
        Ok(d)
    }

    /// Pushes validated queries to the lock-free inbox (never takes the pool
    /// lock). Returns how many were accepted.
    #[pyo3(signature = (prompts, answers=None, metadata=None, parents=None, difficulty=None))]
    fn inbox_push(
        &self,
        py: Python<'_>,
        prompts: &Bound<'_, PyAny>,
        answers: Option<&Bound<'_, PyAny>>,
        metadata: Option<&Bound<'_, PyAny>>,
        parents: Option<PyReadonlyArray1<'_, u64>>,
        difficulty: Option<PyReadonlyArray1<'_, f64>>,
    ) -> PyResult<usize> {
        let payloads = payloads_from(prompts, answers, metadata)?;
        let n = payloads.len();
        let parents = opt_column(parents, "parents", n)?;
        let difficulty = opt_column(difficulty, "difficulty", n)?;
        let items = heapa_core::inbox::items(payloads, parents, difficulty).py_err()?;
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
    m.add("CONFIG_FIELDS", Config::FIELDS.to_vec())?;
    m.add("SNAPSHOT_VERSION", heapa_core::snapshot::FORMAT_VERSION)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
