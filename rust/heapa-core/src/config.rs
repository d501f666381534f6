//! Pool configuration: the knobs of HeaPA, validated in one place.

use crate::error::{invalid, CoreError, Result};

macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident ($label:literal) { $($var:ident = $code:literal => [$($s:literal),+]),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name { $($var = $code),+ }
        impl $name {
            /// Parses a user-facing name (first spelling is canonical).
            pub fn parse(s: &str) -> Result<Self> {
                match s {
                    $($($s)|+ => Ok(Self::$var),)+
                    _ => Err(invalid(format!(
                        concat!($label, ": expected one of {:?}, got {:?}"),
                        [$([$($s),+][0]),+], s))),
                }
            }
            pub fn name(self) -> &'static str {
                match self { $(Self::$var => [$($s),+][0]),+ }
            }
            pub fn code(self) -> u8 { self as u8 }
            pub fn from_code(c: u8) -> Option<Self> {
                match c { $($code => Some(Self::$var),)+ _ => None }
            }
        }
        impl Field for $name {
            fn to_value(&self) -> Value {
                Value::Name(self.name().to_string())
            }
            fn from_value(v: Value, field: &str) -> Result<Self> {
                match v {
                    Value::Name(s) => Self::parse(&s),
                    v => Err(v.mismatch(field, "a name")),
                }
            }
        }
    };
}

named_enum!(
    /// Where the hard and easy sides split.
    Boundary ("boundary") { Quantile = 0 => ["quantile"], Absolute = 1 => ["absolute"] }
);
named_enum!(
    /// How scored prompts are chosen once the cold queue is empty.
    Sampling ("sampling") {
        Medium = 0 => ["medium", "medium_only"],
        Mixed = 1 => ["mixed", "easy_medium_mixed", "mixed_easy_medium"],
        Uniform = 2 => ["uniform"],
        Prioritized = 3 => ["prioritized"],
    }
);
named_enum!(
    /// How never-scored prompts are ordered: first in, first out, or by the
    /// estimate of their group and explicit prior (see `cold.rs`), on one
    /// scale with scored prompts under medium sampling and an absolute
    /// boundary (see `sample.rs`).
    Cold ("cold") { Fifo = 0 => ["fifo"], Prior = 1 => ["prior"] }
);
named_enum!(
    /// Which end of the difficulty order is evicted when the pool is full.
    Eviction ("eviction") { Hardest = 0 => ["hardest"], Easiest = 1 => ["easiest"] }
);
named_enum!(
    /// The per-prompt statistic kept from group results: the latest group
    /// mean (paper), an exponential moving average, or a posterior mean
    /// weighting each result by its rollouts and earlier evidence by its
    /// age (`prior_half_life`), a prior's confidence included.
    Stat ("stat") { Latest = 0 => ["latest"], Ema = 1 => ["ema"], Posterior = 2 => ["posterior"] }
);
named_enum!(
    /// When reported prompts return to the sampling heaps.
    Reinsert ("reinsert") { OnDrain = 0 => ["on_drain"], Immediate = 1 => ["immediate"] }
);
named_enum!(
    /// Lineage aggregation of children values (ChildAgg / PathAgg).
    RefreshMode ("refresh") { Path = 0 => ["path", "path_aggregation"], Children = 1 => ["children", "children_aggregation"] }
);
named_enum!(
    /// Difficulty adjustment applied to a child's value before aggregation.
    Direction ("refresh_direction") { Reference = 0 => ["reference"], Inverse = 1 => ["inverse"] }
);
named_enum!(
    /// Which prompts receive refreshed values.
    Scope ("refresh_scope") { Archive = 0 => ["archive"], All = 1 => ["all"] }
);

/// Parameters of one topology-aware refresh pass.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RefreshParams {
    pub mode: RefreshMode,
    pub temperature: f64,
    pub blend: f64,
    pub direction: Direction,
    pub scope: Scope,
}

impl Default for RefreshParams {
    fn default() -> Self {
        RefreshParams {
            mode: RefreshMode::Path,
            temperature: 1.0,
            blend: 0.5,
            direction: Direction::Reference,
            scope: Scope::Archive,
        }
    }
}

impl RefreshParams {
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(invalid(format!(
                "refresh temperature: expected a finite value > 0, got {}",
                self.temperature
            )));
        }
        if !(0.0..=1.0).contains(&self.blend) {
            return Err(invalid(format!(
                "refresh blend: expected a value in [0, 1], got {}",
                self.blend
            )));
        }
        Ok(())
    }
}

/// Largest capacity: slots are u32 and ids are `generation * (capacity + 1) + slot`.
pub const MAX_CAPACITY: u64 = 1 << 31;
/// Clamp range of the policy's self-reported difficulty ratio (HeaPA).
pub const DIFFICULTY_MIN: f64 = 0.75;
pub const DIFFICULTY_MAX: f64 = 1.33;

/// A configuration value of any field: what the binding converts a Python
/// value to, and what a snapshot stores under the field's name.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Name(String),
    Pair(f64, f64),
}

impl Value {
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Name(_) => "str",
            Value::Pair(..) => "pair",
        }
    }

    fn mismatch(&self, field: &str, want: &str) -> CoreError {
        invalid(format!("{field}: expected {want}, got {}", self.kind()))
    }
}

/// A field type of [`Config`]: how it becomes a [`Value`] and back.
pub trait Field: Sized {
    fn to_value(&self) -> Value;
    fn from_value(v: Value, field: &str) -> Result<Self>;
}

impl Field for u64 {
    fn to_value(&self) -> Value {
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
    fn from_value(v: Value, field: &str) -> Result<Self> {
        match v {
            Value::Int(i) => u64::try_from(i)
                .map_err(|_| invalid(format!("{field}: expected a non-negative integer, got {i}"))),
            v => Err(v.mismatch(field, "a non-negative integer")),
        }
    }
}

impl Field for f64 {
    fn to_value(&self) -> Value {
        Value::Float(*self)
    }
    fn from_value(v: Value, field: &str) -> Result<Self> {
        match v {
            Value::Float(x) => Ok(x),
            Value::Int(i) => Ok(i as f64),
            v => Err(v.mismatch(field, "a number")),
        }
    }
}

impl Field for bool {
    fn to_value(&self) -> Value {
        Value::Bool(*self)
    }
    fn from_value(v: Value, field: &str) -> Result<Self> {
        match v {
            Value::Bool(b) => Ok(b),
            v => Err(v.mismatch(field, "a bool")),
        }
    }
}

impl Field for (f64, f64) {
    fn to_value(&self) -> Value {
        Value::Pair(self.0, self.1)
    }
    fn from_value(v: Value, field: &str) -> Result<Self> {
        match v {
            Value::Pair(a, b) => Ok((a, b)),
            v => Err(v.mismatch(field, "a pair of numbers (lo, hi)")),
        }
    }
}

/// An optional named value (`None` = off).
impl<T: Field> Field for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::None, Field::to_value)
    }
    fn from_value(v: Value, field: &str) -> Result<Self> {
        match v {
            Value::None => Ok(None),
            v => T::from_value(v, field).map(Some),
        }
    }
}

/// The configuration, defined once: the struct, its defaults, the field
/// names in the order users see them (Python's `PoolConfig`), conversion to
/// and from [`Value`]s by name (the binding, snapshots).
macro_rules! config_table {
    ($( $(#[$doc:meta])* $field:ident : $ty:ty = $default:expr ),+ $(,)?) => {
        #[derive(Clone, Debug, PartialEq)]
        pub struct Config {
            $( $(#[$doc])* pub $field: $ty, )+
        }

        impl Default for Config {
            fn default() -> Self {
                Config { $( $field: $default, )+ }
            }
        }

        impl Config {
            /// Field names, in order.
            pub const FIELDS: &'static [&'static str] = &[$(stringify!($field)),+];

            /// Every field's name and value, in order.
            pub fn values(&self) -> Vec<(&'static str, Value)> {
                vec![$( (stringify!($field), self.$field.to_value()) ),+]
            }

            /// Sets one field by name (not validated: call `validate`).
            pub fn set(&mut self, name: &str, v: Value) -> Result<()> {
                match name {
                    $( stringify!($field) => self.$field = Field::from_value(v, name)?, )+
                    _ => {
                        return Err(invalid(format!(
                            "unknown config field {name:?}: expected one of {:?}",
                            Self::FIELDS
                        )))
                    }
                }
                Ok(())
            }
        }
    };
}

config_table! {
    /// Maximum number of prompts held (live + archived + in flight).
    capacity: u64 = 1_000_000,
    boundary: Boundary = Boundary::Quantile,
    low_fraction: f64 = 0.5,
    /// Absolute boundary, in the user's reward scale.
    target: f64 = 0.5,
    sampling: Sampling = Sampling::Medium,
    eviction: Eviction = Eviction::Hardest,
    /// The scale of reported rewards (lo, hi); internally [-1, 1].
    reward_range: (f64, f64) = (0.0, 1.0),
    stat: Stat = Stat::Latest,
    ema_alpha: f64 = 0.3,
    reinsert: Reinsert = Reinsert::OnDrain,
    drop_solved: bool = false,
    priority_epsilon: f64 = 0.1,
    priority_temperature: f64 = 1.0,
    /// Lineage refresh run before each on-drain reinsertion (`None` = off);
    /// its knobs are kept and validated even while it is off.
    refresh: Option<RefreshMode> = None,
    refresh_temperature: f64 = 1.0,
    refresh_blend: f64 = 0.5,
    refresh_direction: Direction = Direction::Reference,
    refresh_scope: Scope = Scope::Archive,
    inbox_capacity: u64 = 65_536,
    delay_steps: u64 = 0,
    /// Minimum revisit interval (`reinsert = "immediate"` only): a reported
    /// prompt sits out until `revisit_fraction × held` more prompts have been
    /// drawn (0 = off). Keeps an absolute frontier from retraining the same
    /// few prompts while the rest of the pool waits.
    revisit_fraction: f64 = 0.0,
    cold: Cold = Cold::Fifo,
    /// `cold = "prior"`: the share of each batch's cold draws that visits
    /// groups uniformly instead of by estimate.
    explore: f64 = 0.1,
    /// Pseudo-count of the pool-wide pass rate in a group's estimate
    /// (empirical-Bayes shrinkage: a group seen a few times stays near it).
    prior_strength: f64 = 4.0,
    /// Steps after which a group observation counts half (0 = never ages).
    prior_half_life: f64 = 0.0,
    seed: u64 = 0,
}

impl Config {
    pub fn validate(&self) -> Result<()> {
        if self.capacity == 0 || self.capacity > MAX_CAPACITY {
            return Err(invalid(format!(
                "capacity: expected 1..={MAX_CAPACITY}, got {}",
                self.capacity
            )));
        }
        if !(self.low_fraction > 0.0 && self.low_fraction < 1.0) {
            return Err(invalid(format!(
                "low_fraction: expected a value in (0, 1), got {}",
                self.low_fraction
            )));
        }
        let (lo, hi) = self.reward_range;
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(invalid(format!(
                "reward_range: expected finite (lo, hi) with lo < hi, got ({lo}, {hi})"
            )));
        }
        if !(self.target.is_finite() && self.target >= lo && self.target <= hi) {
            return Err(invalid(format!(
                "target: expected a value in reward_range [{lo}, {hi}], got {}",
                self.target
            )));
        }
        if !(self.ema_alpha > 0.0 && self.ema_alpha <= 1.0) {
            return Err(invalid(format!(
                "ema_alpha: expected a value in (0, 1], got {}",
                self.ema_alpha
            )));
        }
        if !(self.priority_epsilon.is_finite() && self.priority_epsilon > 0.0) {
            return Err(invalid(format!(
                "priority_epsilon: expected a finite value > 0, got {}",
                self.priority_epsilon
            )));
        }
        if !(self.priority_temperature.is_finite() && self.priority_temperature > 0.0) {
            return Err(invalid(format!(
                "priority_temperature: expected a finite value > 0, got {}",
                self.priority_temperature
            )));
        }
        if self.inbox_capacity == 0 || self.inbox_capacity > (1 << 30) {
            return Err(invalid(format!(
                "inbox_capacity: expected 1..={}, got {}",
                1u64 << 30,
                self.inbox_capacity
            )));
        }
        if !(0.0..=1.0).contains(&self.explore) {
            return Err(invalid(format!(
                "explore: expected a value in [0, 1], got {}",
                self.explore
            )));
        }
        if !(self.prior_strength.is_finite() && self.prior_strength > 0.0) {
            return Err(invalid(format!(
                "prior_strength: expected a finite value > 0, got {}",
                self.prior_strength
            )));
        }
        if !(self.prior_half_life.is_finite() && self.prior_half_life >= 0.0) {
            return Err(invalid(format!(
                "prior_half_life: expected a finite value >= 0 (0 = never ages), got {}",
                self.prior_half_life
            )));
        }
        if !(0.0..1.0).contains(&self.revisit_fraction) {
            return Err(invalid(format!(
                "revisit_fraction: expected a value in [0, 1), got {}",
                self.revisit_fraction
            )));
        }
        if self.revisit_fraction > 0.0 && self.reinsert != Reinsert::Immediate {
            return Err(invalid(format!(
                "revisit_fraction = {} needs reinsert=\"immediate\" (on_drain already holds every trained prompt until the pool drains)",
                self.revisit_fraction
            )));
        }
        self.refresh_params().validate()?;
        Ok(())
    }

    /// The refresh pass the config describes (whether or not it is on).
    pub fn refresh_params(&self) -> RefreshParams {
        RefreshParams {
            mode: self.refresh.unwrap_or(RefreshMode::Path),
            temperature: self.refresh_temperature,
            blend: self.refresh_blend,
            direction: self.refresh_direction,
            scope: self.refresh_scope,
        }
    }

    /// User reward scale -> internal score in [-1, 1] (higher = easier).
    pub fn normalize(&self, r: f64) -> f64 {
        let (lo, hi) = self.reward_range;
        (2.0 * (r - lo) / (hi - lo) - 1.0).clamp(-1.0, 1.0)
    }

    /// Internal score -> user reward scale.
    pub fn denormalize(&self, s: f64) -> f64 {
        let (lo, hi) = self.reward_range;
        lo + (s + 1.0) * 0.5 * (hi - lo)
    }
}

/// Checks `difficulty[i]`, a self-reported difficulty ratio: finite and > 0
/// (it is clamped to HeaPA's range on admission).
pub fn check_difficulty(i: usize, d: f64) -> Result<()> {
    if d.is_finite() && d > 0.0 {
        Ok(())
    } else {
        Err(invalid(format!(
            "difficulty[{i}] = {d}: expected a finite value > 0"
        )))
    }
}

/// Clamps a self-reported difficulty ratio to HeaPA's range.
pub fn clamp_difficulty(d: f64) -> f64 {
    d.clamp(DIFFICULTY_MIN, DIFFICULTY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names_and_aliases() {
        assert_eq!(
            Sampling::parse("easy_medium_mixed").unwrap(),
            Sampling::Mixed
        );
        assert_eq!(Sampling::Mixed.name(), "mixed");
        assert!(Sampling::parse("bogus")
            .unwrap_err()
            .to_string()
            .contains("medium"));
    }

    #[test]
    fn scale_round_trip() {
        let c = Config {
            reward_range: (-1.0, 1.0),
            ..Config::default()
        };
        assert_eq!(c.normalize(0.5), 0.5);
        let d = Config::default();
        assert_eq!(d.normalize(0.5), 0.0);
        assert_eq!(d.denormalize(d.normalize(0.25)), 0.25);
    }

    #[test]
    fn every_field_round_trips_by_name() {
        let c = Config {
            capacity: 7,
            boundary: Boundary::Absolute,
            reward_range: (-1.0, 2.0),
            refresh: Some(RefreshMode::Children),
            revisit_fraction: 0.1,
            reinsert: Reinsert::Immediate,
            ..Config::default()
        };
        let mut d = Config::default();
        for (name, v) in c.values() {
            d.set(name, v).unwrap();
        }
        assert_eq!(c, d);
        assert_eq!(Config::FIELDS.len(), c.values().len());
        assert!(d.set("capcity", Value::Int(3)).is_err());
        let e = d
            .set("capacity", Value::Float(1.5))
            .unwrap_err()
            .to_string();
        assert!(e.contains("capacity") && e.contains("float"), "{e}");
    }

    #[test]
    fn rejects_bad_values() {
        for c in [
            Config {
                capacity: 0,
                ..Config::default()
            },
            Config {
                low_fraction: 1.0,
                ..Config::default()
            },
            Config {
                reward_range: (1.0, 0.0),
                ..Config::default()
            },
            Config {
                target: 2.0,
                ..Config::default()
            },
            Config {
                ema_alpha: 0.0,
                ..Config::default()
            },
        ] {
            assert!(c.validate().is_err());
        }
    }
}
