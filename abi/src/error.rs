//! One error shape for every reply: a stable machine `code` and a human `error` message.
//!
//! On the JSON wire an error is `{"success": false, "error": "...", "code": "..."}`, plus the
//! empty fields the original added for a few opcodes (READ's `content`/`size`, EXEC's
//! `stdout`/`stderr`/`exit_code`, ...), so the original SDK reads our errors the way it read its
//! own. In postcard frames the reply is a `Result<Reply, WireError>`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

use crate::opcode::Opcode;

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident => $s:literal, )*) => {
        /// A stable, machine-readable error class. The string form is the wire form and never
        /// changes meaning; new codes may be added, so readers keep unknown ones as `Other`.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
            /// A code this build does not know (sent by a newer peer).
            Other(String),
        }

        impl ErrorCode {
            /// The wire string.
            pub fn as_str(&self) -> &str {
                match self {
                    $( ErrorCode::$variant => $s, )*
                    ErrorCode::Other(s) => s,
                }
            }

            /// Parses a wire string; unknown strings become [`ErrorCode::Other`].
            pub fn parse(s: &str) -> ErrorCode {
                match s {
                    $( $s => ErrorCode::$variant, )*
                    other => ErrorCode::Other(other.to_owned()),
                }
            }
        }
    };
}

error_codes! {
    /// The payload did not decode into the opcode's request type.
    InvalidRequest => "invalid_request",
    /// The opcode byte is not assigned.
    UnknownOpcode => "unknown_opcode",
    /// The opcode is part of the ABI but this kernel does not implement it yet.
    NotImplemented => "not_implemented",
    /// The opcode is out of this kernel's scope (WORLD_*, TUNNEL_*).
    NotSupported => "not_supported",
    /// The frame's magic is neither codec's.
    BadMagic => "bad_magic",
    /// The frame's payload exceeds the receiver's limit.
    FrameTooLarge => "frame_too_large",
    /// A frame stopped arriving halfway.
    Timeout => "timeout",
    /// The named thing does not exist.
    NotFound => "not_found",
    /// The thing exists already.
    AlreadyExists => "already_exists",
    /// The caller may not do this.
    PermissionDenied => "permission_denied",
    /// A compare-and-set lost a race.
    Conflict => "conflict",
    /// A configured limit was reached.
    LimitExceeded => "limit_exceeded",
    /// The kernel is shutting down or the resource is unavailable.
    Unavailable => "unavailable",
    /// A bug or an unexpected host failure.
    Internal => "internal",
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(ErrorCode::parse(&s))
    }
}

/// An error as it travels: a code and a human message (lower case, naming the thing and the
/// cause, no trailing period).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} ({code})")]
pub struct WireError {
    /// Machine-readable class.
    pub code: ErrorCode,
    /// Human-readable message; the JSON wire calls it `error`.
    #[serde(rename = "error")]
    pub message: String,
}

impl WireError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        WireError {
            code,
            message: message.into(),
        }
    }

    /// `invalid request: <why>`.
    pub fn invalid_request(why: impl fmt::Display) -> Self {
        WireError::new(ErrorCode::InvalidRequest, format!("invalid request: {why}"))
    }

    /// The reply to an opcode byte that is not assigned.
    pub fn unknown_opcode(raw: u8) -> Self {
        WireError::new(
            ErrorCode::UnknownOpcode,
            format!("unknown opcode 0x{raw:02x}"),
        )
    }

    /// The reply to an opcode this kernel does not implement yet.
    pub fn not_implemented(op: Opcode) -> Self {
        WireError::new(
            ErrorCode::NotImplemented,
            format!("{op} is not implemented by this kernel yet"),
        )
    }

    /// The reply to WORLD_* and TUNNEL_*.
    pub fn not_supported(op: Opcode) -> Self {
        WireError::new(
            ErrorCode::NotSupported,
            format!("{op} is not supported: worlds and tunnels are out of this kernel's scope"),
        )
    }

    /// The JSON error object for a reply to `opcode`: `success`, `error`, `code`, and the
    /// empty fields the original SDK expects on that opcode's errors, in that order.
    pub fn to_json(&self, opcode: u8) -> JsonError<'_> {
        JsonError { err: self, opcode }
    }
}

/// A [`WireError`] as the JSON object of an error reply (see [`WireError::to_json`]).
#[derive(Debug, Clone, Copy)]
pub struct JsonError<'a> {
    err: &'a WireError,
    opcode: u8,
}

impl JsonError<'_> {
    /// The empty fields the original added to this opcode's errors.
    fn extras(&self) -> &'static [(&'static str, Extra)] {
        match Opcode::from_u8(self.opcode) {
            Some(Opcode::Read) => &[("content", Extra::Str), ("size", Extra::Zero)],
            Some(Opcode::Write) => &[("bytes_written", Extra::Zero)],
            Some(Opcode::Exec) => &[
                ("stdout", Extra::Str),
                ("stderr", Extra::Str),
                ("exit_code", Extra::MinusOne),
            ],
            Some(Opcode::Recv) => &[("messages", Extra::Array), ("count", Extra::Zero)],
            Some(Opcode::Broadcast) => &[("delivered_count", Extra::Zero)],
            Some(Opcode::Think) => &[("content", Extra::Str)],
            _ => &[],
        }
    }

    /// As a `serde_json::Value`.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Debug, Clone, Copy)]
enum Extra {
    Str,
    Zero,
    MinusOne,
    Array,
}

impl Serialize for JsonError<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let extras = self.extras();
        let mut map = s.serialize_map(Some(3 + extras.len()))?;
        map.serialize_entry("success", &false)?;
        map.serialize_entry("error", &self.err.message)?;
        map.serialize_entry("code", self.err.code.as_str())?;
        for (key, extra) in extras {
            match extra {
                Extra::Str => map.serialize_entry(key, "")?,
                Extra::Zero => map.serialize_entry(key, &0)?,
                Extra::MinusOne => map.serialize_entry(key, &-1)?,
                Extra::Array => map.serialize_entry(key, &[(); 0])?,
            }
        }
        map.end()
    }
}

/// A payload that did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

impl From<DecodeError> for WireError {
    fn from(e: DecodeError) -> Self {
        WireError::invalid_request(e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_the_original_extras() {
        let e = WireError::new(
            ErrorCode::PermissionDenied,
            "read /etc/shadow: blocked path",
        );
        let v = e.to_json(Opcode::Read.as_u8()).to_value();
        assert_eq!(
            v,
            serde_json::json!({"success": false, "error": "read /etc/shadow: blocked path",
                "code": "permission_denied", "content": "", "size": 0})
        );
        let v = e.to_json(Opcode::Exec.as_u8()).to_value();
        assert_eq!(v["exit_code"], -1);
        let text = serde_json::to_string(&e.to_json(Opcode::Hello.as_u8())).unwrap();
        assert_eq!(
            text,
            r#"{"success":false,"error":"read /etc/shadow: blocked path","code":"permission_denied"}"#
        );
    }

    #[test]
    fn unknown_codes_survive() {
        assert_eq!(
            ErrorCode::parse("from_the_future").as_str(),
            "from_the_future"
        );
        assert_eq!(ErrorCode::parse("conflict"), ErrorCode::Conflict);
    }
}
