//! The two payload codecs and the rules that keep one set of serde types right for both.
//!
//! * JSON (`AGNT` magic): what the original SDK and any language speak. Requests follow the
//!   original's leniency: an empty payload means `{}`, unknown fields are ignored, missing
//!   fields take the original's defaults. A request must be a JSON object.
//! * postcard (`CLVP` magic): compact and fast, used by our SDKs. postcard is not
//!   self-describing, so every field is always written, and a reply travels as
//!   `Result<Reply, WireError>` so the reader knows which of the two it holds.
//!
//! Two details make shared types work in both codecs:
//! * Optional reply fields are marked `#[serde(skip_serializing_if = "crate::codec::skip_none")]`:
//!   in JSON a `None` is left out (the original omitted such fields, and its SDK's
//!   `reply.get(key, default)` must see the default, not `null`); in postcard it is written,
//!   because postcard fields are positional.
//! * Arbitrary JSON values ([`Json`]) travel as JSON text inside postcard frames: postcard cannot
//!   carry a self-describing value, and serde's `is_human_readable()` tells the two apart.

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cell::Cell;

use crate::error::{DecodeError, WireError};
use crate::frame::{MAGIC_JSON, MAGIC_POSTCARD};

/// A payload codec, chosen per frame by the magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// UTF-8 JSON, magic `AGNT` (the original's).
    #[default]
    Json,
    /// postcard, magic `CLVP` (ours).
    Postcard,
}

impl Codec {
    /// The magic that announces this codec.
    pub const fn magic(self) -> u32 {
        match self {
            Codec::Json => MAGIC_JSON,
            Codec::Postcard => MAGIC_POSTCARD,
        }
    }

    /// The codec a magic announces.
    pub const fn from_magic(magic: u32) -> Option<Codec> {
        match magic {
            MAGIC_JSON => Some(Codec::Json),
            MAGIC_POSTCARD => Some(Codec::Postcard),
            _ => None,
        }
    }

    /// `"json"` or `"postcard"`.
    pub const fn name(self) -> &'static str {
        match self {
            Codec::Json => "json",
            Codec::Postcard => "postcard",
        }
    }
}

thread_local! {
    static ENCODING_JSON: Cell<bool> = const { Cell::new(false) };
}

/// Sets the "encoding JSON" flag for the current thread while alive. Encoding is synchronous,
/// so a thread-local is exact even inside async tasks.
struct JsonMode(bool);

impl JsonMode {
    fn enter() -> Self {
        JsonMode(ENCODING_JSON.with(|f| f.replace(true)))
    }
}

impl Drop for JsonMode {
    fn drop(&mut self) {
        ENCODING_JSON.with(|f| f.set(self.0));
    }
}

/// `skip_serializing_if` predicate for optional fields: skips `None` in JSON only.
pub fn skip_none<T>(value: &Option<T>) -> bool {
    value.is_none() && ENCODING_JSON.with(|f| f.get())
}

/// Encodes a message (a request, or a reply without the error envelope) in `codec`.
pub fn encode<T: Serialize + ?Sized>(codec: Codec, value: &T) -> Result<Vec<u8>, EncodeError> {
    match codec {
        Codec::Json => {
            let _mode = JsonMode::enter();
            serde_json::to_vec(value).map_err(|e| EncodeError(e.to_string()))
        }
        Codec::Postcard => postcard::to_stdvec(value).map_err(|e| EncodeError(e.to_string())),
    }
}

/// Decodes a request payload in `codec` into its typed request.
///
/// JSON follows the original's leniency (empty payload = `{}`, unknown fields ignored) and is
/// strict where the original crashed: the payload must be a JSON object, and a wrongly typed
/// field is reported with its path (`invalid request: limits.memory: invalid type: ...`).
pub fn decode_request<T: DeserializeOwned>(codec: Codec, payload: &[u8]) -> Result<T, DecodeError> {
    match codec {
        Codec::Json => decode_json_object(payload),
        Codec::Postcard => decode_postcard(payload),
    }
}

fn decode_json_object<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    let first = payload.iter().position(|b| !b.is_ascii_whitespace());
    let Some(first) = first else {
        return decode_json_path(b"{}");
    };
    if payload[first] != b'{' {
        // Name what was sent, when it is valid JSON at all; else serde's syntax error says why.
        return match serde_json::from_slice::<IgnoredAny>(payload) {
            Ok(_) => Err(DecodeError(format!(
                "expected a JSON object, found {}",
                json_kind(payload[first])
            ))),
            Err(e) => Err(DecodeError(e.to_string())),
        };
    }
    decode_json_path(payload)
}

fn decode_json_path<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    let de = &mut serde_json::Deserializer::from_slice(payload);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || inner.is_syntax() || inner.is_eof() {
            DecodeError(inner.to_string())
        } else {
            DecodeError(format!("{path}: {inner}"))
        }
    })?;
    de.end().map_err(|e| DecodeError(e.to_string()))?;
    Ok(value)
}

fn json_kind(first: u8) -> &'static str {
    match first {
        b'[' => "an array",
        b'"' => "a string",
        b't' | b'f' => "a boolean",
        b'n' => "null",
        _ => "a number",
    }
}

fn decode_postcard<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    let (value, rest) =
        postcard::take_from_bytes(payload).map_err(|e| DecodeError(format!("postcard: {e}")))?;
    if !rest.is_empty() {
        return Err(DecodeError(format!(
            "postcard: {} trailing bytes after the message",
            rest.len()
        )));
    }
    Ok(value)
}

/// Encodes a reply to `opcode`: the message itself, or the error.
///
/// JSON: the reply object, or the error object of [`WireError::to_json`]. postcard: the
/// `Result<T, WireError>` envelope.
pub fn encode_reply<T: Serialize + ?Sized>(
    codec: Codec,
    opcode: u8,
    reply: Result<&T, &WireError>,
) -> Result<Vec<u8>, EncodeError> {
    match (codec, reply) {
        (Codec::Json, Ok(value)) => encode(Codec::Json, value),
        (Codec::Json, Err(err)) => encode(Codec::Json, &err.to_json(opcode)),
        (Codec::Postcard, reply) => {
            postcard::to_stdvec(&reply).map_err(|e| EncodeError(e.to_string()))
        }
    }
}

/// Decodes a reply payload: `Ok(Ok(reply))`, `Ok(Err(kernel error))`, or a decode failure.
///
/// In JSON an error is an object with `"success": false` and a string `code` (every error our
/// kernel sends has one; no success reply has a `code` field).
pub fn decode_reply<T: DeserializeOwned>(
    codec: Codec,
    payload: &[u8],
) -> Result<Result<T, WireError>, DecodeError> {
    match codec {
        Codec::Json => {
            if let Some(err) = json_error(payload) {
                return Ok(Err(err));
            }
            decode_json_path(payload).map(Ok)
        }
        Codec::Postcard => decode_postcard(payload),
    }
}

/// The error in a JSON reply, if it is one.
fn json_error(payload: &[u8]) -> Option<WireError> {
    #[derive(Deserialize)]
    struct Probe {
        success: Option<bool>,
        code: Option<String>,
        error: Option<String>,
    }
    // Only objects can be errors; LIST's array reply and others are skipped cheaply.
    let first = payload.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    let probe: Probe = serde_json::from_slice(payload).ok()?;
    match (probe.success, probe.code) {
        (Some(false), Some(code)) => Some(WireError::new(
            crate::error::ErrorCode::parse(&code),
            probe.error.unwrap_or_default(),
        )),
        _ => None,
    }
}

/// A message that could not be encoded (a bug in the message type, never bad input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("encode: {0}")]
pub struct EncodeError(pub String);

impl From<EncodeError> for WireError {
    fn from(e: EncodeError) -> Self {
        WireError::new(crate::error::ErrorCode::Internal, e.to_string())
    }
}

/// An arbitrary JSON value inside a typed message (a message body, a stored value, event data).
///
/// In JSON it is the value itself; in postcard it travels as JSON text.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Json(pub serde_json::Value);

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            self.0.serialize(s)
        } else {
            s.serialize_str(&self.0.to_string())
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            serde_json::Value::deserialize(d).map(Json)
        } else {
            let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
            serde_json::from_str(&text)
                .map(Json)
                .map_err(serde::de::Error::custom)
        }
    }
}

impl From<serde_json::Value> for Json {
    fn from(v: serde_json::Value) -> Self {
        Json(v)
    }
}

/// Arbitrary JSON values for the round-trip property tests: nested objects and arrays of
/// strings, integers, finite floats, booleans and null.
#[cfg(test)]
impl proptest::arbitrary::Arbitrary for Json {
    type Parameters = ();
    type Strategy = proptest::strategy::BoxedStrategy<Json>;

    fn arbitrary_with(_: ()) -> Self::Strategy {
        use proptest::prelude::*;
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            proptest::num::f64::NORMAL.prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z_]{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
        .prop_map(Json)
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Msg {
        key: String,
        #[serde(default)]
        n: u32,
        #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
        note: Option<String>,
        #[serde(default)]
        value: Json,
    }

    #[test]
    fn none_is_omitted_in_json_and_written_in_postcard() {
        let m = Msg {
            key: "k".into(),
            n: 1,
            note: None,
            value: Json(serde_json::json!({"a": [1, 2]})),
        };
        let j = encode(Codec::Json, &m).unwrap();
        assert_eq!(j, br#"{"key":"k","n":1,"value":{"a":[1,2]}}"#);
        let p = encode(Codec::Postcard, &m).unwrap();
        assert_eq!(decode_request::<Msg>(Codec::Postcard, &p).unwrap(), m);
        assert_eq!(decode_request::<Msg>(Codec::Json, &j).unwrap(), m);
    }

    #[test]
    fn json_requests_are_lenient_where_the_original_was_and_strict_where_it_crashed() {
        #[derive(Debug, Default, Deserialize)]
        struct Empty {}
        decode_request::<Empty>(Codec::Json, b"").unwrap();
        decode_request::<Empty>(Codec::Json, b"  {\"unknown\": 1} ").unwrap();
        let e = decode_request::<Empty>(Codec::Json, b"[]").unwrap_err();
        assert_eq!(e.0, "expected a JSON object, found an array");
        let e = decode_request::<Msg>(Codec::Json, br#"{"key": 5}"#).unwrap_err();
        assert!(e.0.starts_with("key: invalid type: integer `5`"), "{e}");
        let e = decode_request::<Msg>(Codec::Json, br#"{"key": "#).unwrap_err();
        assert!(e.0.contains("EOF"), "{e}");
        let e = decode_request::<Msg>(Codec::Json, br#"{"key": "a"} x"#).unwrap_err();
        assert!(e.0.contains("trailing"), "{e}");
    }

    #[test]
    fn replies_carry_errors_in_both_codecs() {
        let err = WireError::not_implemented(crate::Opcode::Think);
        for codec in [Codec::Json, Codec::Postcard] {
            let bytes = encode_reply::<Msg>(codec, 0x01, Err(&err)).unwrap();
            let back = decode_reply::<Msg>(codec, &bytes).unwrap();
            assert_eq!(back, Err(err.clone()));
        }
    }
}
