#!/usr/bin/env python3
"""Speaks the original Clove frame with the Python standard library only, as an agent script
written for the original kernel would, and checks what our kernel answers.

Usage: original_frame.py SOCKET

Exits 0 when every check passes; otherwise prints the failed check to stderr and exits 1.
"""

import json
import socket
import struct
import sys

MAGIC_JSON = 0x41474E54
HEADER = struct.Struct("<IIBQ")  # magic, agent_id, opcode, payload_len: 17 bytes, packed
assert HEADER.size == 17

NOOP, LIST, STORE, SPAWN, HELLO, EXIT = 0x00, 0x12, 0x30, 0x10, 0xFE, 0xFF
TIMEOUT = 5.0


class CheckFailed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise CheckFailed(what)


def connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    s.connect(path)
    return s


def send(s, opcode, payload=b"", magic=MAGIC_JSON, length=None):
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload) if length is None else length
    s.sendall(HEADER.pack(magic, 0, opcode, n) + payload)


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise CheckFailed("connection closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return buf


def recv_frame(s):
    magic, agent_id, opcode, n = HEADER.unpack(recv_exact(s, HEADER.size))
    check(magic == MAGIC_JSON, "reply magic 0x%08X, expected 0x%08X" % (magic, MAGIC_JSON))
    return agent_id, opcode, recv_exact(s, n)


def call(s, opcode, payload=b""):
    send(s, opcode, payload)
    agent_id, rop, body = recv_frame(s)
    check(rop == opcode, "reply opcode 0x%02X to request 0x%02X" % (rop, opcode))
    check(agent_id != 0, "reply agent_id is 0 for opcode 0x%02X" % opcode)
    return agent_id, body


def call_json(s, opcode, payload=b""):
    _, body = call(s, opcode, payload)
    try:
        return json.loads(body)
    except ValueError:
        raise CheckFailed("reply to 0x%02X is not JSON: %r" % (opcode, body[:200]))


def assert_closed(s, what):
    """The kernel closed the connection: EOF (or a reset) within TIMEOUT."""
    try:
        data = s.recv(4096)
    except ConnectionResetError:
        return
    except socket.timeout:
        raise CheckFailed("%s: connection still open after %.0f s" % (what, TIMEOUT))
    check(data == b"", "%s: expected the connection to close, got %r" % (what, data[:200]))


def check_error(reply, code, what, message=None, prefix=None):
    check(isinstance(reply, dict), "%s: error reply is not an object: %r" % (what, reply))
    check(reply.get("success") is False, "%s: success is not false: %r" % (what, reply))
    check(reply.get("code") == code, "%s: code %r, expected %r: %r" % (what, reply.get("code"), code, reply))
    err = reply.get("error")
    check(isinstance(err, str) and err, "%s: no error text: %r" % (what, reply))
    if message is not None:
        check(err == message, "%s: error %r, expected %r" % (what, err, message))
    if prefix is not None:
        check(err.startswith(prefix), "%s: error %r does not start with %r" % (what, err, prefix))


def still_serves(path, after):
    s = connect(path)
    try:
        reply = call_json(s, HELLO, b"{}")
        check(reply.get("success") is True and reply.get("protocol_version") == 1,
              "after %s, HELLO on a new connection failed: %r" % (after, reply))
    finally:
        s.close()


def parse(body, what):
    try:
        return json.loads(body)
    except ValueError:
        raise CheckFailed("%s: reply is not JSON: %r" % (what, body[:200]))


def session_checks(path):
    """NOOP echoes any bytes, HELLO describes the kernel, empty payloads mean {}, EXIT ends."""
    s = connect(path)
    for payload in [b"ping", b"", bytes(range(256)), b'{"not": "parsed"}']:
        _, body = call(s, NOOP, payload)
        check(body == payload, "NOOP echoed %r for %r" % (body[:50], payload[:50]))
    hello = call_json(s, HELLO, b"{}")
    check(hello.get("success") is True, "HELLO success: %r" % hello)
    check(hello.get("protocol_version") == 1, "HELLO protocol_version: %r" % hello)
    check(isinstance(hello.get("kernel_version"), str) and hello["kernel_version"],
          "HELLO kernel_version: %r" % hello)
    features = hello.get("features")
    check(isinstance(features, dict), "HELLO features: %r" % hello)
    check(sorted(features.get("codecs", [])) == ["json", "postcard"], "HELLO codecs: %r" % features)
    ops = features.get("opcodes", [])
    for name in ["NOOP", "HELLO", "EXIT"]:
        check(name in ops, "HELLO features.opcodes lacks %s: %r" % (name, ops))

    # The original SDK sends LIST and EXIT with empty payloads.
    hello2 = call_json(s, HELLO, b"")
    check(hello2.get("success") is True and hello2.get("protocol_version") == 1,
          "HELLO with an empty payload: %r" % hello2)
    listed = call_json(s, LIST, b"")
    if "LIST" in ops:
        check(isinstance(listed, list), "LIST with an empty payload: %r" % listed)
    else:
        check_error(listed, "not_implemented", "LIST with an empty payload",
                    message="LIST (0x12) is not implemented by this kernel yet")
    _, body = call(s, EXIT, b"")
    check(body == b"goodbye", "EXIT replied %r" % body)
    assert_closed(s, "after EXIT")
    s.close()


def bad_magic(path):
    """An error reply in JSON, then the connection is closed."""
    s = connect(path)
    send(s, HELLO, b"{}", magic=0x12345678)
    _, rop, body = recv_frame(s)
    check(rop == HELLO, "bad magic: reply opcode 0x%02X" % rop)
    check_error(parse(body, "bad magic"), "bad_magic", "bad magic")
    assert_closed(s, "after a bad magic")
    s.close()


def too_large(path):
    """A 2 MiB payload length is refused at the header, without waiting for the payload."""
    s = connect(path)
    send(s, NOOP, b"", length=2 * 1024 * 1024)
    _, rop, body = recv_frame(s)
    check(rop == NOOP, "2 MiB: reply opcode 0x%02X" % rop)
    check_error(parse(body, "2 MiB"), "frame_too_large", "a 2 MiB payload length")
    assert_closed(s, "after a 2 MiB payload length")
    s.close()


def usable_after(request, expect):
    """A request answered with an error; the same connection then still echoes a NOOP."""
    def run(path):
        s = connect(path)
        opcode, payload = request
        expect(call_json(s, opcode, payload))
        _, body = call(s, NOOP, b"still here")
        check(body == b"still here", "NOOP after the error echoed %r" % body)
        s.close()
    return run


CASES = [
    ("NOOP, HELLO, empty payloads, EXIT", session_checks),
    ("bad magic", bad_magic),
    ("2 MiB payload length", too_large),
    ("unknown opcode 0x13", usable_after(
        (0x13, b"{}"),
        lambda r: check_error(r, "unknown_opcode", "unknown opcode 0x13",
                              message="unknown opcode 0x13"))),
    ("STORE with malformed JSON", usable_after(
        (STORE, b'{"key": '),
        lambda r: check_error(r, "invalid_request", "STORE with malformed JSON",
                              prefix="invalid request: "))),
    ("HELLO with a JSON array", usable_after(
        (HELLO, b"[]"),
        lambda r: check_error(r, "invalid_request", "HELLO with a JSON array",
                              message="invalid request: expected a JSON object, found an array"))),
    ("STORE with a numeric key", usable_after(
        (STORE, b'{"key": 5}'),
        lambda r: check_error(r, "invalid_request", "STORE with a numeric key",
                              prefix="invalid request: key: invalid type"))),
    ("SPAWN with a numeric name", usable_after(
        (SPAWN, b'{"name": 1, "script": "x"}'),
        lambda r: check_error(r, "invalid_request", "SPAWN with a numeric name",
                              prefix="invalid request: name: invalid type"))),
]


def main(path):
    """Runs every case, then a HELLO on a new connection; returns the failures."""
    failures = []
    for name, case in CASES:
        try:
            case(path)
        except (CheckFailed, OSError, ValueError) as e:
            msg = str(e)
            failures.append(msg if msg.startswith(name) else "%s: %s" % (name, msg))
        try:
            still_serves(path, name)
        except (CheckFailed, OSError, ValueError) as e:
            failures.append("after %s: %s" % (name, e))
    return failures


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: original_frame.py SOCKET", file=sys.stderr)
        sys.exit(2)
    failed = main(sys.argv[1])
    for f in failed:
        print("FAIL: %s" % f, file=sys.stderr)
    if failed:
        print("%d of %d checks failed" % (len(failed), len(CASES)), file=sys.stderr)
        sys.exit(1)
    print("ok: %d original-frame checks passed" % len(CASES))
