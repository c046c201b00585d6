//! Golden tests: byte-exact request frames in both codecs, and the original SDK's JSON parsed
//! as the typed messages read it. One module per message family.
//!
//! A golden frame is written out as hex by hand from the contract (UPSTREAM-ABI.md and
//! docs/protocol.md), never copied from the encoder's own output, so a change to field order,
//! names, defaults or the postcard layout fails here first.

mod asyncs;
mod audit;
mod events;
mod hello;
mod host;
mod ipc;
mod lifecycle;
mod llm;
mod metrics;
mod perms;
mod record;
mod state;

use clove_abi::codec::{decode_request, encode};
use clove_abi::frame::encode_frame;
use clove_abi::{Codec, Syscall};

/// Parses hex written with any whitespace: `"54 4e 47 41  07 00 00 00"`.
pub fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(
        digits.len().is_multiple_of(2),
        "odd number of hex digits in {text:?}"
    );
    digits
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).expect("ascii");
            u8::from_str_radix(s, 16).unwrap_or_else(|_| panic!("bad hex {s:?}"))
        })
        .collect()
}

/// The 17-byte header followed by `payload`, as hex, for the expected side of a golden test:
/// magic, agent id, opcode, payload length, all little-endian.
pub fn header_hex(codec: Codec, agent_id: u32, opcode: u8, payload_len: u64) -> String {
    let magic: &str = match codec {
        Codec::Json => "54 4e 47 41",
        Codec::Postcard => "50 56 4c 43",
    };
    let id: String = agent_id
        .to_le_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let len: String = payload_len
        .to_le_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{magic} {id} {opcode:02x} {len}")
}

/// Asserts that `msg` encodes to exactly `json` (text) and `postcard` (hex) as a payload and as
/// a whole frame from agent 7, and that both decode back to `msg`.
pub fn golden<T: Syscall + PartialEq + std::fmt::Debug>(msg: &T, json: &str, postcard: &str) {
    let op = T::OPCODE.as_u8();
    for (codec, payload) in [
        (Codec::Json, json.as_bytes().to_vec()),
        (Codec::Postcard, hex(postcard)),
    ] {
        let encoded = encode(codec, msg).expect("encode");
        assert_eq!(
            encoded,
            payload,
            "{} payload of {:?}: got {}",
            codec.name(),
            msg,
            String::from_utf8_lossy(&encoded)
        );
        let frame = encode_frame(codec, 7, op, &encoded);
        let mut expected = hex(&header_hex(codec, 7, op, payload.len() as u64));
        expected.extend_from_slice(&payload);
        assert_eq!(frame, expected, "{} frame of {:?}", codec.name(), msg);
        let back: T = decode_request(codec, &payload).expect("decode");
        assert_eq!(&back, msg, "{} decode", codec.name());
    }
}

/// Parses JSON the original Python SDK sends, as the kernel does.
pub fn parse<T: Syscall>(json: &str) -> T {
    decode_request(Codec::Json, json.as_bytes())
        .unwrap_or_else(|e| panic!("{} rejected {json}: {e}", T::OPCODE))
}

/// The decode error for JSON the kernel must reject.
pub fn reject<T: Syscall + std::fmt::Debug>(json: &str) -> String {
    match decode_request::<T>(Codec::Json, json.as_bytes()) {
        Ok(v) => panic!("{} accepted {json} as {v:?}", T::OPCODE),
        Err(e) => e.to_string(),
    }
}

/// A reply as our kernel sends it in JSON: through the codec, so `None`s are left out (which
/// `serde_json::to_value` would not do).
pub fn sent<T: serde::Serialize>(reply: &T) -> serde_json::Value {
    serde_json::from_slice(&encode(Codec::Json, reply).expect("encode")).expect("json")
}

/// A reply's bare postcard payload (without the `Result` envelope).
pub fn postcard<T: serde::Serialize>(reply: &T) -> Vec<u8> {
    encode(Codec::Postcard, reply).expect("encode")
}

/// A success reply as a client reads it from JSON (the original kernel's or ours).
pub fn read<T: serde::de::DeserializeOwned>(json: &str) -> T {
    match clove_abi::codec::decode_reply::<T>(Codec::Json, json.as_bytes()) {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => panic!("{json} read as the error {e:?}"),
        Err(e) => panic!("{json} did not read as a reply: {e}"),
    }
}

/// Owned strings from string literals.
pub fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}
