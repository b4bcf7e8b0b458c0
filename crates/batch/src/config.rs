//! `server.raft.batch`: the settings of the batch proposal loop and their rules.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::BatchError;

/// Compression of large batch frames. Decoding reads the frame's flag, so a
/// log written with one setting reads the same under any other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Compression {
    #[default]
    None,
    Lz4,
}

impl Compression {
    /// The name used in config files (`none`, `lz4`).
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Compression {
    type Err = BatchError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Compression::None),
            "lz4" => Ok(Compression::Lz4),
            other => Err(BatchError::InvalidConfig {
                key: "compression",
                rule: format!("compression ({other:?}) must be one of \"none\", \"lz4\""),
            }),
        }
    }
}

/// Settings of the batch proposal loop (YAML `server.raft.batch`).
#[derive(Clone, Debug, PartialEq)]
pub struct BatchConfig {
    /// `false`: every proposal is flushed alone and at once (same pipeline).
    pub enable: bool,
    /// Batch size at load 0.
    pub min_batch_size: usize,
    /// Batch size at load 1, and the most proposals one flush ever takes.
    pub max_batch_size: usize,
    /// Longest wait of a buffered proposal at load 0.
    pub min_timeout: Duration,
    /// Longest wait of a buffered proposal at load 1.
    pub max_timeout: Duration,
    /// Load above which batch size and timeout grow toward their maxima.
    pub load_threshold: f64,
    /// Larger proposals are refused with `TooLarge`.
    pub max_proposal_bytes: usize,
    /// Capacity of the bounded input queue; a full queue blocks `propose`.
    pub queue_capacity: usize,
    /// Compression of batches whose body reaches `compress_min_bytes`.
    pub compression: Compression,
    pub compress_min_bytes: usize,
}

impl Default for BatchConfig {
    /// The seed's defaults (`configs/config.yaml`).
    fn default() -> Self {
        BatchConfig {
            enable: true,
            min_batch_size: 1,
            max_batch_size: 256,
            min_timeout: Duration::from_millis(5),
            max_timeout: Duration::from_millis(20),
            load_threshold: 0.7,
            max_proposal_bytes: 1024 * 1024,
            queue_capacity: 8192,
            compression: Compression::None,
            compress_min_bytes: 4096,
        }
    }
}

fn invalid(key: &'static str, rule: String) -> Result<(), BatchError> {
    Err(BatchError::InvalidConfig { key, rule })
}

impl BatchConfig {
    /// Checks every rule and reports the first one broken, naming the key and
    /// the values (`min_batch_size (300) must be <= max_batch_size (256)`).
    pub fn validate(&self) -> Result<(), BatchError> {
        if self.min_batch_size == 0 {
            return invalid("min_batch_size", "min_batch_size (0) must be > 0".into());
        }
        if self.max_batch_size == 0 {
            return invalid("max_batch_size", "max_batch_size (0) must be > 0".into());
        }
        if self.min_batch_size > self.max_batch_size {
            return invalid(
                "min_batch_size",
                format!(
                    "min_batch_size ({}) must be <= max_batch_size ({})",
                    self.min_batch_size, self.max_batch_size
                ),
            );
        }
        if self.min_timeout.is_zero() {
            return invalid("min_timeout", "min_timeout (0ms) must be > 0".into());
        }
        if self.max_timeout.is_zero() {
            return invalid("max_timeout", "max_timeout (0ms) must be > 0".into());
        }
        if self.min_timeout > self.max_timeout {
            return invalid(
                "min_timeout",
                format!(
                    "min_timeout ({:?}) must be <= max_timeout ({:?})",
                    self.min_timeout, self.max_timeout
                ),
            );
        }
        if !(self.load_threshold.is_finite() && (0.0..=1.0).contains(&self.load_threshold)) {
            return invalid(
                "load_threshold",
                format!(
                    "load_threshold ({}) must be between 0 and 1",
                    self.load_threshold
                ),
            );
        }
        if self.max_proposal_bytes == 0 {
            return invalid(
                "max_proposal_bytes",
                "max_proposal_bytes (0) must be > 0".into(),
            );
        }
        if self.queue_capacity == 0 {
            return invalid("queue_capacity", "queue_capacity (0) must be > 0".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule_of(c: BatchConfig) -> (&'static str, String) {
        match c.validate() {
            Err(BatchError::InvalidConfig { key, rule }) => (key, rule),
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_the_seeds_and_valid() {
        let c = BatchConfig::default();
        assert!(c.enable);
        assert_eq!((c.min_batch_size, c.max_batch_size), (1, 256));
        assert_eq!(c.min_timeout, Duration::from_millis(5));
        assert_eq!(c.max_timeout, Duration::from_millis(20));
        assert_eq!(c.load_threshold, 0.7);
        assert_eq!(c.max_proposal_bytes, 1 << 20);
        assert_eq!(c.queue_capacity, 8192);
        assert_eq!(c.compression, Compression::None);
        assert_eq!(c.compress_min_bytes, 4096);
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn each_rule_names_key_and_values() {
        let d = BatchConfig::default;
        let cases: Vec<(BatchConfig, &str, &str)> = vec![
            (
                BatchConfig {
                    min_batch_size: 0,
                    ..d()
                },
                "min_batch_size",
                "min_batch_size (0) must be > 0",
            ),
            (
                BatchConfig {
                    max_batch_size: 0,
                    ..d()
                },
                "max_batch_size",
                "max_batch_size (0) must be > 0",
            ),
            (
                BatchConfig {
                    min_batch_size: 300,
                    ..d()
                },
                "min_batch_size",
                "min_batch_size (300) must be <= max_batch_size (256)",
            ),
            (
                BatchConfig {
                    min_timeout: Duration::ZERO,
                    ..d()
                },
                "min_timeout",
                "min_timeout (0ms) must be > 0",
            ),
            (
                BatchConfig {
                    max_timeout: Duration::ZERO,
                    ..d()
                },
                "max_timeout",
                "max_timeout (0ms) must be > 0",
            ),
            (
                BatchConfig {
                    min_timeout: Duration::from_millis(30),
                    ..d()
                },
                "min_timeout",
                "min_timeout (30ms) must be <= max_timeout (20ms)",
            ),
            (
                BatchConfig {
                    load_threshold: 1.5,
                    ..d()
                },
                "load_threshold",
                "load_threshold (1.5) must be between 0 and 1",
            ),
            (
                BatchConfig {
                    load_threshold: -0.1,
                    ..d()
                },
                "load_threshold",
                "load_threshold (-0.1) must be between 0 and 1",
            ),
            (
                BatchConfig {
                    load_threshold: f64::NAN,
                    ..d()
                },
                "load_threshold",
                "load_threshold (NaN) must be between 0 and 1",
            ),
            (
                BatchConfig {
                    max_proposal_bytes: 0,
                    ..d()
                },
                "max_proposal_bytes",
                "max_proposal_bytes (0) must be > 0",
            ),
            (
                BatchConfig {
                    queue_capacity: 0,
                    ..d()
                },
                "queue_capacity",
                "queue_capacity (0) must be > 0",
            ),
        ];
        for (cfg, key, rule) in cases {
            assert_eq!(rule_of(cfg), (key, rule.to_string()));
        }
    }

    #[test]
    fn edge_values_are_valid() {
        let d = BatchConfig::default;
        for c in [
            BatchConfig {
                load_threshold: 0.0,
                ..d()
            },
            BatchConfig {
                load_threshold: 1.0,
                ..d()
            },
            BatchConfig {
                min_batch_size: 256,
                ..d()
            },
            BatchConfig {
                min_timeout: Duration::from_millis(20),
                ..d()
            },
            BatchConfig {
                enable: false,
                compress_min_bytes: 0,
                compression: Compression::Lz4,
                ..d()
            },
        ] {
            assert_eq!(c.validate(), Ok(()), "{c:?}");
        }
    }

    #[test]
    fn compression_names() {
        assert_eq!("none".parse::<Compression>(), Ok(Compression::None));
        assert_eq!("lz4".parse::<Compression>(), Ok(Compression::Lz4));
        assert_eq!(Compression::Lz4.to_string(), "lz4");
        let err = "zstd".parse::<Compression>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "compression: compression (\"zstd\") must be one of \"none\", \"lz4\""
        );
    }
}
