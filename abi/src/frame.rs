//! The frame header: 17 bytes, packed, little-endian, exactly as the original kernel reads it.
//!
//! ```text
//! offset  size  field
//!      0     4  magic        u32 LE: selects the payload codec
//!      4     4  agent_id     u32 LE: in replies, the caller's id as the kernel sees it;
//!                            in requests, ignored (the kernel trusts the socket, not the header)
//!      8     1  opcode       u8
//!      9     8  payload_len  u64 LE
//! ```
//!
//! Two magics share the header. `0x41474E54` (wire bytes `54 4E 47 41`, "AGNT" read as a
//! big-endian word) is the original's and means a UTF-8 JSON payload. `0x434C5650` (wire bytes
//! `50 56 4C 43`, "CLVP" spelled the same way) is ours and means a postcard payload. A reply
//! always uses the codec of its request, so a client picks its codec per frame.

use crate::codec::Codec;

/// Length of the frame header in bytes.
pub const HEADER_LEN: usize = 17;

/// Magic of a frame with a JSON payload: the original's `AGNT`.
pub const MAGIC_JSON: u32 = 0x4147_4E54;

/// Magic of a frame with a postcard payload: our `CLVP`.
pub const MAGIC_POSTCARD: u32 = 0x434C_5650;

/// The original's inbound payload limit: 1 MiB, inclusive.
pub const DEFAULT_MAX_PAYLOAD: u64 = 1024 * 1024;

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload codec, from the magic.
    pub codec: Codec,
    /// Agent id: the caller's id in replies; ignored in requests.
    pub agent_id: u32,
    /// Raw opcode byte. Kept raw so that unknown opcodes can still be answered in kind.
    pub opcode: u8,
    /// Payload length in bytes.
    pub payload_len: u64,
}

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The first four bytes are neither magic.
    #[error("bad magic 0x{0:08X}: expected 0x{MAGIC_JSON:08X} (JSON) or 0x{MAGIC_POSTCARD:08X} (postcard)")]
    BadMagic(u32),
    /// The payload length exceeds the receiver's limit.
    #[error("frame payload of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Declared payload length.
        len: u64,
        /// The receiver's limit.
        max: u64,
    },
}

impl FrameHeader {
    /// A header for `payload_len` bytes of `codec` payload.
    pub fn new(codec: Codec, agent_id: u32, opcode: u8, payload_len: usize) -> Self {
        FrameHeader {
            codec,
            agent_id,
            opcode,
            payload_len: payload_len as u64,
        }
    }

    /// Encodes the header into its 17 wire bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&self.codec.magic().to_le_bytes());
        out[4..8].copy_from_slice(&self.agent_id.to_le_bytes());
        out[8] = self.opcode;
        out[9..17].copy_from_slice(&self.payload_len.to_le_bytes());
        out
    }

    /// Decodes 17 wire bytes. Only the magic can be wrong here; check the length against the
    /// receiver's limit with [`FrameHeader::check_len`].
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Self, FrameError> {
        let magic = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let codec = Codec::from_magic(magic).ok_or(FrameError::BadMagic(magic))?;
        let agent_id = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        let mut len = [0u8; 8];
        len.copy_from_slice(&bytes[9..17]);
        Ok(FrameHeader {
            codec,
            agent_id,
            opcode: bytes[8],
            payload_len: u64::from_le_bytes(len),
        })
    }

    /// Refuses a payload longer than `max` bytes (`max` itself is accepted, as the original does).
    pub fn check_len(&self, max: u64) -> Result<(), FrameError> {
        if self.payload_len > max {
            return Err(FrameError::TooLarge {
                len: self.payload_len,
                max,
            });
        }
        Ok(())
    }
}

/// Encodes a whole frame (header then payload) into one buffer.
pub fn encode_frame(codec: Codec, agent_id: u32, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    write_frame(&mut out, codec, agent_id, opcode, payload);
    out
}

/// Appends a whole frame (header then payload) to `out`, for writers that batch frames.
pub fn write_frame(out: &mut Vec<u8>, codec: Codec, agent_id: u32, opcode: u8, payload: &[u8]) {
    out.extend_from_slice(&FrameHeader::new(codec, agent_id, opcode, payload.len()).encode());
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_magic_has_the_original_wire_bytes() {
        let h = FrameHeader::new(Codec::Json, 7, 0xFE, 2);
        let b = h.encode();
        assert_eq!(&b[0..4], &[0x54, 0x4E, 0x47, 0x41]);
        assert_eq!(&b[4..8], &[7, 0, 0, 0]);
        assert_eq!(b[8], 0xFE);
        assert_eq!(&b[9..17], &[2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(FrameHeader::decode(&b), Ok(h));
    }

    #[test]
    fn bad_magic_is_refused_with_the_value() {
        let mut b = FrameHeader::new(Codec::Json, 0, 0, 0).encode();
        b[0] = b'X';
        assert!(matches!(
            FrameHeader::decode(&b),
            Err(FrameError::BadMagic(_))
        ));
    }

    #[test]
    fn length_limit_is_inclusive() {
        let h = FrameHeader::new(Codec::Postcard, 0, 0, 1 << 20);
        assert!(h.check_len(DEFAULT_MAX_PAYLOAD).is_ok());
        let h = FrameHeader::new(Codec::Postcard, 0, 0, (1 << 20) + 1);
        assert!(h.check_len(DEFAULT_MAX_PAYLOAD).is_err());
    }
}
