"""Shared fixtures of the clove_sdk test suite: a real `clove-kernel` for the whole session.

* ``kernel`` (session): starts the binary named by $CLOVE_KERNEL_BIN (else
  <repo>/target/debug/clove-kernel) on a fresh temp dir, with ``--python sys.executable`` so a
  sandboxed agent runs with this venv's interpreter and can import clove_sdk, and with
  ``--http-allow-private 127.0.0.1/32`` so HTTP may reach the loopback servers the tests start
  (only that address: 127.0.0.2, ::1 and every other special range stay refused). It holds an
  exclusive flock on /tmp/clove-e2e.lock while the kernel runs (the Rust heavy e2e tests take
  the same lock, so the two suites never overlap) and stops the kernel with SIGTERM at the end,
  asserting it exits within 10 s.
* ``client``: a fresh `CloveClient` on that kernel per test.
* ``agents``: spawns agents from small scripts written into the test's tmp_path and kills every
  one of them when the test ends.
* An autouse guard: after each test that used the kernel, nothing may be left running. A leaked
  agent is killed and the test errors.

Sandboxed SPAWN needs root: the ``agents`` fixture skips (with the reason) when not root.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from clove_sdk import CloveClient, SyscallOp

REPO = Path(__file__).resolve().parents[2]
LOCK_PATH = "/tmp/clove-e2e.lock"
LOCK_WAIT_S = 600
READY_WAIT_S = 20
STOP_WAIT_S = 10

MAGIC = 0x41474E54
HEADER = struct.Struct("<IIBQ")
OP_HELLO = 0xFE


def kernel_binary() -> Path:
    env = os.environ.get("CLOVE_KERNEL_BIN")
    if env:
        path = Path(env)
        if not (path.is_file() and os.access(path, os.X_OK)):
            pytest.fail(f"$CLOVE_KERNEL_BIN={env} is not an executable file", pytrace=False)
        return path
    path = REPO / "target" / "debug" / "clove-kernel"
    if path.is_file() and os.access(path, os.X_OK):
        return path
    pytest.fail(
        f"no clove-kernel binary: set $CLOVE_KERNEL_BIN or build {path} "
        "(cargo build -p clove-kernel), or use sdk-python/tests/run.sh",
        pytrace=False,
    )
    raise AssertionError("unreachable")


def _hello_on_new_connection(sock_path: str) -> bool:
    """One HELLO over a fresh raw connection (not through the SDK under test)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(sock_path)
            s.sendall(HEADER.pack(MAGIC, 0, OP_HELLO, 2) + b"{}")
            head = b""
            while len(head) < HEADER.size:
                chunk = s.recv(HEADER.size - len(head))
                if not chunk:
                    return False
                head += chunk
            magic, _agent, opcode, length = HEADER.unpack(head)
            body = b""
            while len(body) < length:
                chunk = s.recv(length - len(body))
                if not chunk:
                    return False
                body += chunk
            return magic == MAGIC and opcode == OP_HELLO and json.loads(body)["success"] is True
    except (OSError, ValueError, KeyError):
        return False


def _catches_sigterm(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    except OSError:
        pass
    return False


@dataclass
class KernelProc:
    socket: str
    state_dir: str
    pid: int
    dir: str
    proc: subprocess.Popen = field(repr=False)
    log_path: str = ""

    def log_tail(self, n: int = 40) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""


def _take_lock():
    try:
        fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o644)
    except PermissionError:  # another user's lock file: flock works on a read-only descriptor
        fd = os.open(LOCK_PATH, os.O_RDONLY)
    deadline = time.monotonic() + LOCK_WAIT_S
    announced = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if not announced:
                sys.stderr.write(f"\n[clove tests] waiting for {LOCK_PATH} (another e2e run holds it)\n")
                announced = True
            if time.monotonic() > deadline:
                os.close(fd)
                pytest.fail(f"could not lock {LOCK_PATH} within {LOCK_WAIT_S} s", pytrace=False)
            time.sleep(0.2)


def _processes_mentioning(text: str) -> List[str]:
    """Command lines of live processes that mention ``text`` (an agent gets the socket as argv[1])."""
    found = []
    needle = text.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if needle in cmd:
            shown = cmd.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry}: {shown}")
    return found


@pytest.fixture(scope="session")
def kernel():
    binary = kernel_binary()
    lock_fd = _take_lock()
    tmp = tempfile.mkdtemp(prefix="clove-pytest-")
    os.chmod(tmp, 0o755)
    sock = os.path.join(tmp, "clove.sock")
    state = os.path.join(tmp, "state")
    log_path = os.path.join(tmp, "kernel.log")
    env = {k: v for k, v in os.environ.items() if k not in ("CLOVE_SOCKET", "CLOVE_CONFIG")}
    env["CLOVE_LOG"] = os.environ.get("CLOVE_TEST_LOG", "warn")
    # The simulated LLM, whatever provider keys this machine's environment holds.
    env["CLOVE_LLM_PROVIDER"] = "simulated"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [
            str(binary),
            "--socket", sock,
            "--state-dir", state,
            "--no-compat-socket",
            "--python", sys.executable,
            "--http-allow-private", "127.0.0.1/32",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    k = KernelProc(socket=sock, state_dir=state, pid=proc.pid, dir=tmp, proc=proc, log_path=log_path)
    try:
        deadline = time.monotonic() + READY_WAIT_S
        while True:
            if _hello_on_new_connection(sock) and _catches_sigterm(proc.pid):
                break
            if proc.poll() is not None:
                pytest.fail(
                    f"clove-kernel exited before it was ready (status {proc.returncode}):\n"
                    + k.log_tail(),
                    pytrace=False,
                )
            if time.monotonic() > deadline:
                pytest.fail(f"clove-kernel not ready on {sock} after {READY_WAIT_S} s:\n" + k.log_tail(),
                            pytrace=False)
            time.sleep(0.01)
        yield k
    finally:
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    status = proc.wait(STOP_WAIT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    pytest.fail(f"clove-kernel did not exit within {STOP_WAIT_S} s of SIGTERM", pytrace=False)
                assert status == 0, f"clove-kernel exited with {status} after SIGTERM:\n{k.log_tail()}"
            leftovers = _processes_mentioning(sock)
            assert not leftovers, f"processes still running with the kernel's socket in argv: {leftovers}"
        finally:
            log.close()
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
            os.close(lock_fd)
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def client(kernel):
    c = CloveClient(kernel.socket)
    yield c
    c.disconnect()


@pytest.fixture(autouse=True)
def _no_agent_left_running(request):
    """After a test that used the kernel, no agent may be left running."""
    yield
    if "kernel" not in request.fixturenames:
        return
    k = request.getfixturevalue("kernel")
    with CloveClient(k.socket, timeout=15) as c:
        live = c.list_agents()
        for a in live:
            c.kill(agent_id=a["id"])
            c.wait(agent_id=a["id"], timeout=10)
    assert live == [], f"agents left running after the test: {live}"


# ---- agents ----------------------------------------------------------------------------------

def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("sandboxed SPAWN needs root (the kernel runs as this user, not root)")


#: An agent that says it is up and then sleeps until killed.
SLEEPER = """
import time
print("up", flush=True)
time.sleep(120)
"""


class Agents:
    """Spawns agents for one test and kills them all at its end."""

    def __init__(self, kernel: KernelProc, tmp_path: Path) -> None:
        self.kernel = kernel
        self.tmp_path = tmp_path
        self.spawned: List[Dict[str, Any]] = []
        self._client = CloveClient(kernel.socket, timeout=30)
        tmp_path.chmod(0o755)

    def script(self, code: str, filename: Optional[str] = None) -> str:
        path = self.tmp_path / (filename or f"agent_{uuid.uuid4().hex[:8]}.py")
        path.write_text(textwrap.dedent(code))
        path.chmod(0o644)
        return str(path)

    @staticmethod
    def name(prefix: str = "t") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:8]}"

    def track(self, reply: Dict[str, Any]) -> Dict[str, Any]:
        if isinstance(reply, dict) and "id" in reply:
            self.spawned.append(reply)
        return reply

    def spawn(self, code: str = SLEEPER, name: Optional[str] = None, via: Optional[CloveClient] = None,
              **kw: Any) -> Dict[str, Any]:
        """Spawns ``code`` (through ``via``, or a client of its own) and asserts it started."""
        c = via or self._client
        reply = self.track(c.spawn(name or self.name(), self.script(code), **kw))
        assert "id" in reply, f"SPAWN failed: {reply}"
        return reply

    def wait_output(self, agent_id: int, text: str, timeout: float = 10) -> str:
        """Waits until the agent's output contains ``text``; returns the output."""
        deadline = time.monotonic() + timeout
        out = ""
        while time.monotonic() < deadline:
            r = self._client.logs(agent_id=agent_id, offset=0, wait=0.2)
            out = r.get("text", "")
            if text in out:
                return out
        raise AssertionError(f"agent {agent_id} did not print {text!r} within {timeout} s; output: {out!r}")

    def cleanup(self) -> None:
        for a in self.spawned:
            self._client.kill(agent_id=a["id"])
        for a in self.spawned:
            self._client.wait(agent_id=a["id"], timeout=10)
        self._client.disconnect()
        # Their processes are gone (reaped), not merely reported dead.
        deadline = time.monotonic() + 5
        alive = [a["pid"] for a in self.spawned if os.path.exists(f"/proc/{a['pid']}")]
        while alive and time.monotonic() < deadline:
            time.sleep(0.05)
            alive = [p for p in alive if os.path.exists(f"/proc/{p}")]
        assert not alive, f"agent processes still exist after KILL and WAIT: {alive}"


@pytest.fixture
def agents(kernel, tmp_path):
    needs_root()
    a = Agents(kernel, tmp_path)
    yield a
    a.cleanup()


@pytest.fixture(scope="session")
def implemented(kernel):
    """The opcode names the kernel implements (HELLO's features.opcodes)."""
    with CloveClient(kernel.socket) as c:
        return set(c.hello()["features"]["opcodes"])


def opname(op: int) -> str:
    return SyscallOp(op).name[4:]
