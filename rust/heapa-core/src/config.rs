//! Pool configuration: the knobs of HeaPA, validated in one place.

use crate::error::{invalid, Result};

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
    /// Which end of the difficulty order is evicted when the pool is full.
    Eviction ("eviction") { Hardest = 0 => ["hardest"], Easiest = 1 => ["easiest"] }
);
named_enum!(
    /// The per-prompt statistic kept from group results.
    Stat ("stat") { Latest = 0 => ["latest"], Ema = 1 => ["ema"] }
);
named_enum!(
    /// When reported prompts return to the sampling heaps.
    Reinsert ("reinsert") { OnDrain = 0 => ["on_drain"], Immediate = 1 => ["immediate"] }
);
named_enum!(
    /// Lineage aggregation of children values (ChildAgg / PathAgg).
    RefreshMode ("refresh (mode)") { Path = 0 => ["path", "path_aggregation"], Children = 1 => ["children", "children_aggregation"] }
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

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub capacity: u64,
    pub boundary: Boundary,
    pub low_fraction: f64,
    /// Absolute boundary, in the user's reward scale.
    pub target: f64,
    pub sampling: Sampling,
    pub eviction: Eviction,
    pub reward_lo: f64,
    pub reward_hi: f64,
    pub stat: Stat,
    pub ema_alpha: f64,
    pub reinsert: Reinsert,
    pub drop_solved: bool,
    pub priority_epsilon: f64,
    pub priority_temperature: f64,
    /// Refresh knobs (kept and validated even while the refresh is off).
    pub refresh: RefreshParams,
    /// Run `refresh` before each on-drain reinsertion.
    pub refresh_on_reinsert: bool,
    pub inbox_capacity: u64,
    pub delay_steps: u64,
    /// Minimum revisit interval (`reinsert = "immediate"` only): a reported
    /// prompt sits out until `revisit_fraction × held` more prompts have been
    /// drawn (0 = off). Keeps an absolute frontier from retraining the same
    /// few prompts while the rest of the pool waits.
    pub revisit_fraction: f64,
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            capacity: 1_000_000,
            boundary: Boundary::Quantile,
            low_fraction: 0.5,
            target: 0.5,
            sampling: Sampling::Medium,
            eviction: Eviction::Hardest,
            reward_lo: 0.0,
            reward_hi: 1.0,
            stat: Stat::Latest,
            ema_alpha: 0.3,
            reinsert: Reinsert::OnDrain,
            drop_solved: false,
            priority_epsilon: 0.1,
            priority_temperature: 1.0,
            refresh: RefreshParams::default(),
            refresh_on_reinsert: false,
            inbox_capacity: 65_536,
            delay_steps: 0,
            revisit_fraction: 0.0,
            seed: 0,
        }
    }
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
        if !(self.reward_lo.is_finite()
            && self.reward_hi.is_finite()
            && self.reward_lo < self.reward_hi)
        {
            return Err(invalid(format!(
                "reward_range: expected finite (lo, hi) with lo < hi, got ({}, {})",
                self.reward_lo, self.reward_hi
            )));
        }
        if !(self.target.is_finite()
            && self.target >= self.reward_lo
            && self.target <= self.reward_hi)
        {
            return Err(invalid(format!(
                "target: expected a value in reward_range [{}, {}], got {}",
                self.reward_lo, self.reward_hi, self.target
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
        self.refresh.validate()?;
        Ok(())
    }

    /// User reward scale -> internal score in [-1, 1] (higher = easier).
    pub fn normalize(&self, r: f64) -> f64 {
        (2.0 * (r - self.reward_lo) / (self.reward_hi - self.reward_lo) - 1.0).clamp(-1.0, 1.0)
    }

    /// Internal score -> user reward scale.
    pub fn denormalize(&self, s: f64) -> f64 {
        self.reward_lo + (s + 1.0) * 0.5 * (self.reward_hi - self.reward_lo)
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
            reward_lo: -1.0,
            reward_hi: 1.0,
            ..Config::default()
        };
        assert_eq!(c.normalize(0.5), 0.5);
        let d = Config::default();
        assert_eq!(d.normalize(0.5), 0.0);
        assert_eq!(d.denormalize(d.normalize(0.25)), 0.25);
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
                reward_lo: 1.0,
                reward_hi: 0.0,
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
