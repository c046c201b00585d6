//! A fake kernel for the SDK's tests: a std thread on a socket under a tempdir that answers
//! frames the way the real kernel does, plus a few opcodes repurposed to misbehave.
//!
//! | opcode        | answer                                                            |
//! |---------------|-------------------------------------------------------------------|
//! | NOOP          | the payload, echoed                                               |
//! | HELLO         | a `HelloReply` (or, with `hello_fails`, a `permission_denied`)    |
//! | EXIT          | `goodbye`, then the connection is closed                          |
//! | THINK         | a `not_implemented` error                                         |
//! | KILL          | a reply header with a bad magic                                   |
//! | LIST          | a reply under opcode KILL (opcode mismatch)                       |
//! | SPAWN         | a header announcing 100 bytes, 3 bytes, then close                |
//! | PAUSE         | a 1000-byte NOOP-like payload (for the client's size limit)       |
//! | RESUME        | nothing at all (for timeouts)                                     |
//! | anything else | an `unknown_opcode` error                                         |
//!
//! A frame over [`MAX_FRAME`] is answered `frame_too_large` without being read, then the
//! connection is closed. Every reply header carries agent id [`AGENT_ID`] and the request's codec. A request whose
//! typed payload does not decode (HELLO, EXIT) is answered with `invalid_request`, so a test
//! sees it if the client encodes wrongly.

#![allow(clippy::unwrap_used, dead_code)]

use std::io::{BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::thread;

use clove_abi::codec::{self, Codec};
use clove_abi::frame::{FrameHeader, HEADER_LEN};
use clove_abi::msg::{ExitRequest, Features, HelloReply, HelloRequest, GOODBYE};
use clove_abi::{ErrorCode, Opcode, WireError};

/// The id the fake kernel reports in every reply header.
pub const AGENT_ID: u32 = 42;

/// Frames with a larger payload are refused with `frame_too_large`, then the connection is
/// closed, as the kernel does.
pub const MAX_FRAME: u64 = 1024 * 1024;

/// How the fake kernel behaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct Opts {
    /// HELLO answers `permission_denied`.
    pub hello_fails: bool,
}

/// A fake kernel listening on `socket` until the test process ends.
pub struct FakeKernel {
    /// Holds the socket.
    pub dir: tempfile::TempDir,
    /// The socket to connect to.
    pub socket: PathBuf,
}

impl FakeKernel {
    pub fn start() -> FakeKernel {
        FakeKernel::start_with(Opts::default())
    }

    pub fn start_with(opts: Opts) -> FakeKernel {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("fake.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                thread::spawn(move || serve(stream, opts));
            }
        });
        FakeKernel { dir, socket }
    }
}

pub fn hello_reply() -> HelloReply {
    HelloReply {
        success: true,
        protocol_version: 1,
        kernel_version: "fake 0.0.1".into(),
        features: Features {
            codecs: vec!["json".into(), "postcard".into()],
            opcodes: vec!["NOOP".into(), "HELLO".into(), "EXIT".into()],
            ..Features::default()
        },
    }
}

fn serve(stream: UnixStream, opts: Opts) {
    let mut out = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut head = [0u8; HEADER_LEN];
        if reader.read_exact(&mut head).is_err() {
            return;
        }
        let header = match FrameHeader::decode(&head) {
            Ok(h) => h,
            Err(e) => {
                let err = WireError::new(ErrorCode::BadMagic, e.to_string());
                let body = codec::encode_reply::<()>(Codec::Json, head[8], Err(&err)).unwrap();
                let _ = send(&mut out, Codec::Json, head[8], &body);
                return;
            }
        };
        if header.payload_len > MAX_FRAME {
            // As the kernel: refuse without reading the payload, then close.
            let err = WireError::new(ErrorCode::FrameTooLarge, "frame payload too large");
            let body = codec::encode_reply::<()>(header.codec, header.opcode, Err(&err)).unwrap();
            let _ = send(&mut out, header.codec, header.opcode, &body);
            return;
        }
        let mut payload = vec![0u8; header.payload_len as usize];
        if reader.read_exact(&mut payload).is_err() {
            return;
        }
        let (c, op) = (header.codec, header.opcode);
        let error = |e: WireError| codec::encode_reply::<()>(c, op, Err(&e)).unwrap();
        let reply = match Opcode::from_u8(op) {
            Some(Opcode::Noop) => payload,
            Some(Opcode::Hello) => match codec::decode_request::<HelloRequest>(c, &payload) {
                Err(e) => error(e.into()),
                Ok(_) if opts.hello_fails => error(WireError::new(
                    ErrorCode::PermissionDenied,
                    "hello from uid 1000: permission denied",
                )),
                Ok(_) => codec::encode_reply(c, op, Ok(&hello_reply())).unwrap(),
            },
            Some(Opcode::Exit) => match codec::decode_request::<ExitRequest>(c, &payload) {
                Err(e) => error(e.into()),
                Ok(_) => {
                    let _ = send(&mut out, c, op, GOODBYE);
                    return;
                }
            },
            Some(Opcode::Think) => error(WireError::not_implemented(Opcode::Think)),
            Some(Opcode::Kill) => {
                let mut h = FrameHeader::new(c, AGENT_ID, op, 0).encode();
                h[0..4].copy_from_slice(b"XXXX");
                let _ = out.write_all(&h);
                continue;
            }
            Some(Opcode::List) => {
                let _ = send(&mut out, c, Opcode::Kill.as_u8(), b"");
                continue;
            }
            Some(Opcode::Spawn) => {
                let mut frame = FrameHeader::new(c, AGENT_ID, op, 100).encode().to_vec();
                frame.extend_from_slice(b"abc");
                let _ = out.write_all(&frame);
                return;
            }
            Some(Opcode::Pause) => vec![7u8; 1000],
            Some(Opcode::Resume) => continue,
            _ => error(WireError::unknown_opcode(op)),
        };
        if send(&mut out, c, op, &reply).is_err() {
            return;
        }
    }
}

fn send(out: &mut UnixStream, c: Codec, op: u8, payload: &[u8]) -> std::io::Result<()> {
    out.write_all(&clove_abi::frame::encode_frame(c, AGENT_ID, op, payload))
}

/// Both codecs, the SDK's default first.
pub const CODECS: [Codec; 2] = [Codec::Postcard, Codec::Json];

/// A typed request under an opcode the fake kernel refuses.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Think {
    /// The prompt (never read: the fake kernel refuses THINK).
    pub prompt: String,
}

impl clove_sdk::Syscall for Think {
    const OPCODE: clove_sdk::Opcode = clove_sdk::Opcode::Think;
    type Reply = clove_sdk::msg::HelloReply;
}
