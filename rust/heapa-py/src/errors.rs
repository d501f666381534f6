//! The one place where core errors become Python exceptions.
//!
//! The exception classes live in `heapa.exceptions` (Python), because some of
//! them inherit from two built-ins (`UnknownPromptError` is also a
//! `KeyError`, `InvalidInputError` also a `ValueError`), which
//! `create_exception!` cannot express.

use heapa_core::CoreError;
use pyo3::prelude::*;
use pyo3::types::PyType;

fn exception_class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyType>> {
    Ok(py
        .import("heapa.exceptions")?
        .getattr(name)?
        .cast_into::<PyType>()?)
}

/// Builds the Python exception for a core error.
pub fn to_py(err: CoreError) -> PyErr {
    let name = match &err {
        CoreError::UnknownPrompt { .. } => "UnknownPromptError",
        CoreError::InvalidInput(_) => "InvalidInputError",
        CoreError::Capacity(_) => "CapacityError",
        CoreError::Snapshot(_) | CoreError::Io(_) => "SnapshotError",
    };
    let msg = err.to_string();
    Python::attach(|py| match exception_class(py, name) {
        Ok(cls) => PyErr::from_type(cls, msg),
        Err(e) => e,
    })
}

/// `InvalidInputError` raised by the binding's own argument checks.
pub fn invalid(msg: impl Into<String>) -> PyErr {
    to_py(CoreError::InvalidInput(msg.into()))
}

pub trait IntoPyResult<T> {
    fn py_err(self) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for Result<T, CoreError> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}
