use clove_abi::msg::{ExitRequest, HelloRequest};

use crate::{golden, parse};

#[test]
fn hello_and_exit_are_empty_objects() {
    golden(&HelloRequest {}, "{}", "");
    golden(&ExitRequest {}, "{}", "");
    // The original SDK sends EXIT with an empty payload.
    let _: ExitRequest = parse("");
}
