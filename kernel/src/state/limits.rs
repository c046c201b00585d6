//! The store's size limits and the request checks that enforce them before anything is queued.

use clove_abi::error::{ErrorCode, WireError};

/// Bounds on what the state store accepts. Every one of them turns into a clear
/// `limit_exceeded` error, never into unbounded memory: the store keeps every live key in
/// memory (see the module docs), so `max_total_bytes` bounds its footprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateLimits {
    /// Longest key, in bytes of UTF-8.
    pub max_key_bytes: usize,
    /// Largest value, in bytes of its JSON text.
    pub max_value_bytes: usize,
    /// Most keys held at once, all scopes and owners together.
    pub max_keys: u64,
    /// Most bytes held at once (keys plus JSON text of values), all scopes and owners together.
    pub max_total_bytes: u64,
}

impl Default for StateLimits {
    fn default() -> Self {
        StateLimits {
            max_key_bytes: 1024,
            max_value_bytes: 256 * 1024,
            max_keys: 1_000_000,
            max_total_bytes: 256 * 1024 * 1024,
        }
    }
}

/// The longest TTL accepted, in seconds (about 31,700 years): keeps `now + ttl` far inside
/// an `i64` of milliseconds.
pub const MAX_TTL_SECS: f64 = 1e12;

impl StateLimits {
    /// Checks a key for STORE: not empty, not longer than `max_key_bytes`.
    pub fn check_key(&self, key: &str) -> Result<(), WireError> {
        if key.is_empty() {
            return Err(WireError::invalid_request("state key is empty"));
        }
        if key.len() > self.max_key_bytes {
            return Err(WireError::new(
                ErrorCode::LimitExceeded,
                format!(
                    "state key is {} bytes long, the limit is {} bytes",
                    key.len(),
                    self.max_key_bytes
                ),
            ));
        }
        Ok(())
    }

    /// Checks the JSON text of a value against `max_value_bytes`.
    pub fn check_value(&self, key: &str, text: &str) -> Result<(), WireError> {
        if text.len() > self.max_value_bytes {
            return Err(WireError::new(
                ErrorCode::LimitExceeded,
                format!(
                    "state value for key {key:?} is {} bytes of json, the limit is {} bytes",
                    text.len(),
                    self.max_value_bytes
                ),
            ));
        }
        Ok(())
    }
}

/// Turns a STORE `ttl` (seconds, finite, > 0, at most [`MAX_TTL_SECS`]) into milliseconds,
/// rounded up so that a tiny positive TTL never means "already expired".
pub fn ttl_millis(ttl: f64) -> Result<i64, WireError> {
    if !ttl.is_finite() || ttl <= 0.0 {
        return Err(WireError::invalid_request(format!(
            "ttl must be a positive number of seconds, got {ttl}"
        )));
    }
    if ttl > MAX_TTL_SECS {
        return Err(WireError::invalid_request(format!(
            "ttl {ttl} s is too long, the limit is {MAX_TTL_SECS} s"
        )));
    }
    // In range by the checks above: at most 1e15 ms, exactly representable.
    Ok((ttl * 1000.0).ceil() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_is_checked_and_rounded_up() {
        assert_eq!(ttl_millis(2.5).unwrap(), 2500);
        assert_eq!(ttl_millis(0.0001).unwrap(), 1);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e13] {
            let e = ttl_millis(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidRequest, "{bad}");
            assert!(e.message.contains("ttl"), "{}", e.message);
        }
    }
}
