//! HELLO: the handshake. (NOOP and EXIT are raw and answered in the dispatcher.)

use clove_abi::msg::{Features, HelloReply, HelloRequest};
use clove_abi::{Codec, WireError};

use crate::kernel::{Caller, Kernel};

/// HELLO: protocol version, our version, and the features really implemented.
pub fn hello(
    kernel: &Kernel,
    _caller: &Caller,
    _req: HelloRequest,
) -> Result<HelloReply, WireError> {
    Ok(HelloReply {
        success: true,
        protocol_version: clove_abi::PROTOCOL_VERSION,
        kernel_version: env!("CARGO_PKG_VERSION").to_owned(),
        features: Features {
            codecs: [Codec::Json, Codec::Postcard]
                .iter()
                .map(|c| c.name().to_owned())
                .collect(),
            opcodes: super::IMPLEMENTED
                .iter()
                .map(|op| op.name().to_owned())
                .collect(),
            agents: true,
            sandbox: kernel.agents.host.root,
            ipc: true,
            state: true,
            events: true,
            audit: true,
            llm: true,
            supervision: true,
            metrics: true,
        },
    })
}
