//! Python values to owned Rust values, with errors that name the argument and
//! the element. Everything is copied before the GIL is released, so a caller
//! thread that writes an input array meanwhile cannot change what the engine
//! validates or applies.

use heapa_core::config::Value;
use numpy::PyReadonlyArray1;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyInt, PyString};

use crate::errors::invalid;

/// A contiguous 1-D array, copied.
pub fn column<T: numpy::Element + Copy>(
    a: &PyReadonlyArray1<'_, T>,
    name: &str,
) -> PyResult<Vec<T>> {
    a.as_slice()
        .map(<[T]>::to_vec)
        .map_err(|_| invalid(format!("{name}: expected a contiguous 1-D array")))
}

/// An optional column, copied, of length `n` when given.
pub fn opt_column<T: numpy::Element + Copy>(
    a: Option<PyReadonlyArray1<'_, T>>,
    name: &str,
    n: usize,
) -> PyResult<Option<Vec<T>>> {
    let Some(a) = a else { return Ok(None) };
    let v = column(&a, name)?;
    check_len(name, v.len(), n)?;
    Ok(Some(v))
}

pub fn check_len(name: &str, got: usize, n: usize) -> PyResult<()> {
    if got != n {
        return Err(invalid(format!(
            "{name}: expected length {n} (one per prompt), got {got}"
        )));
    }
    Ok(())
}

fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type()
        .name()
        .map_or_else(|_| "?".into(), |n| n.to_string())
}

/// One str element, UTF-8 encodable (no lone surrogates), borrowed.
pub fn text<'a>(v: &'a Bound<'_, PyAny>, what: impl Fn() -> String) -> PyResult<&'a str> {
    let s = v
        .cast::<PyString>()
        .map_err(|_| invalid(format!("{}: expected str, got {}", what(), type_name(v))))?;
    s.to_str().map_err(|_| {
        invalid(format!(
            "{}: not encodable as UTF-8 (it contains a lone surrogate)",
            what()
        ))
    })
}

/// A sequence of str or None (owned: they outlive the GIL).
pub fn opt_texts(v: &Bound<'_, PyAny>, name: &str) -> PyResult<Vec<Option<String>>> {
    items(v, name)?
        .iter()
        .enumerate()
        .map(|(i, x)| {
            if x.is_none() {
                Ok(None)
            } else {
                text(x, || format!("{name}[{i}]")).map(|s| Some(s.to_owned()))
            }
        })
        .collect()
}

/// The elements of a sequence argument (a str is not a sequence of texts).
pub fn items<'py>(v: &Bound<'py, PyAny>, name: &str) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let not_a_list = || {
        invalid(format!(
            "{name}: expected a sequence of str, got {}",
            type_name(v)
        ))
    };
    if v.is_instance_of::<PyString>() || v.is_instance_of::<PyBytes>() {
        return Err(not_a_list());
    }
    v.try_iter()
        .map_err(|_| not_a_list())?
        .collect::<PyResult<Vec<_>>>()
}

/// Optional per-prompt JSON bytes (`None` elements allowed).
pub fn opt_bytes(
    v: Option<&Bound<'_, PyAny>>,
    name: &str,
) -> PyResult<Option<Vec<Option<Vec<u8>>>>> {
    let Some(v) = v.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for (i, x) in v.try_iter()?.enumerate() {
        let x = x?;
        if x.is_none() {
            out.push(None);
        } else {
            let b = x.cast::<PyBytes>().map_err(|_| {
                invalid(format!(
                    "{name}[{i}]: expected bytes, got {}",
                    type_name(&x)
                ))
            })?;
            out.push(Some(b.as_bytes().to_vec()));
        }
    }
    Ok(Some(out))
}

/// A str argument.
pub fn name_arg(v: &Bound<'_, PyAny>, name: &str) -> PyResult<String> {
    text(v, || name.to_string()).map(str::to_owned)
}

/// A real number (int or float, never bool, str or None).
pub fn float_arg(v: &Bound<'_, PyAny>, name: &str) -> PyResult<f64> {
    let bad = || invalid(format!("{name}: expected a number, got {}", type_name(v)));
    if v.is_none()
        || v.is_instance_of::<PyBool>()
        || v.is_instance_of::<PyString>()
        || v.is_instance_of::<PyBytes>()
    {
        return Err(bad());
    }
    v.extract::<f64>().map_err(|_| bad())
}

/// A pair of numbers.
pub fn pair_arg(v: &Bound<'_, PyAny>, name: &str) -> PyResult<(f64, f64)> {
    let bad = || {
        invalid(format!(
            "{name}: expected a pair of numbers (lo, hi), got {}",
            v.repr().map_or_else(|_| "?".into(), |r| r.to_string())
        ))
    };
    if v.is_instance_of::<PyString>() || v.is_instance_of::<PyBytes>() {
        return Err(bad());
    }
    let items: Vec<Bound<'_, PyAny>> = v.try_iter().map_err(|_| bad())?.collect::<PyResult<_>>()?;
    match items.as_slice() {
        [lo, hi] => Ok((
            float_arg(lo, &format!("{name}[0]"))?,
            float_arg(hi, &format!("{name}[1]"))?,
        )),
        _ => Err(bad()),
    }
}

/// A config field's value: None, bool, int, float, str or a pair of numbers
/// (which kind the field takes is the core's business).
pub fn config_value(v: &Bound<'_, PyAny>, name: &str) -> PyResult<Value> {
    if v.is_none() {
        return Ok(Value::None);
    }
    if v.is_instance_of::<PyBool>() {
        return Ok(Value::Bool(v.extract()?));
    }
    if v.is_instance_of::<PyString>() {
        return Ok(Value::Name(name_arg(v, name)?));
    }
    if v.is_instance_of::<PyFloat>() {
        return Ok(Value::Float(v.extract()?));
    }
    if v.is_instance_of::<PyInt>() || v.hasattr("__index__")? {
        return v.extract::<i64>().map(Value::Int).map_err(|_| {
            let shown = v.repr().map_or_else(|_| "?".into(), |r| r.to_string());
            invalid(format!(
                "{name}: expected an integer below 2**63, got {shown}"
            ))
        });
    }
    if v.hasattr("__float__")? && !v.is_instance_of::<PyBytes>() {
        return Ok(Value::Float(float_arg(v, name)?));
    }
    pair_arg(v, name).map(|(a, b)| Value::Pair(a, b))
}

/// A config value as a Python object.
pub fn config_object<'py>(py: Python<'py>, v: Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::None => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, b).to_owned().into_any(),
        Value::Int(i) => i.into_pyobject(py)?.into_any(),
        Value::Float(x) => x.into_pyobject(py)?.into_any(),
        Value::Name(s) => PyString::new(py, &s).into_any(),
        Value::Pair(a, b) => (a, b).into_pyobject(py)?.into_any(),
    })
}
