//! The native half of the Python package `clove_sdk` (the module `clove_sdk._native`).
//!
//! It is deliberately small: two connection classes that move frames, and the few rules the
//! Python code must share with the Rust SDK and the kernel rather than copy. Everything a user
//! sees (the `CloveClient` methods, their parameters, defaults and docstrings, the typed
//! exceptions) is Python, in `python/clove_sdk/`, where `help()` shows it.
//!
//! * [`Connection`]: a blocking connection over [`clove_sdk::Client`]. Every socket operation
//!   runs with the GIL released, so other Python threads go on while a call waits for the
//!   kernel.
//! * [`AsyncConnection`]: the same over [`clove_sdk::AsyncClient`], its calls awaitable from
//!   asyncio (the I/O runs on a tokio runtime owned by the extension).
//! * Requests and replies travel as JSON, the original's codec, so a reply reaches Python
//!   exactly as the kernel wrote it for the original SDK: same keys, same omissions, same
//!   per-opcode error shapes. The Python layer encodes requests with `json.dumps`, as the
//!   original did (so values JSON cannot carry raise `TypeError`); JSON replies become Python
//!   values through `pythonize`, transcoded in one pass.
//! * Failures of the connection itself become Python's own exceptions: `OSError` subclasses with
//!   the errno (`FileNotFoundError`, `ConnectionRefusedError`, `BrokenPipeError`, ...),
//!   `TimeoutError`, `ConnectionError` for a stream that went out of step, `ValueError` for a
//!   request that is not JSON or a misuse of pipelining. Kernel errors are replies, not
//!   exceptions: the Python layer decides whether to raise them.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use clove_sdk::{AsyncClient, Client, Codec, Error, Opcode, RawReply, WireError};
use pyo3::exceptions::{PyConnectionError, PyOSError, PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

/// A JSON reply as a Python value. A payload that is not JSON (EXIT's `goodbye`) comes back as
/// text, and text that is not UTF-8 as bytes: the caller sees what the kernel said.
fn reply_value<'py>(py: Python<'py>, payload: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    // Transcoded straight from JSON text to Python objects, keys in the kernel's order.
    let mut from = serde_json::Deserializer::from_slice(payload);
    let value = serde_transcode::transcode(&mut from, pythonize::Pythonizer::new(py))
        .ok()
        .filter(|_| from.end().is_ok());
    match value {
        Some(value) => Ok(value),
        None => match std::str::from_utf8(payload) {
            Ok(text) => Ok(PyString::new(py, text).into_any()),
            Err(_) => Ok(PyBytes::new(py, payload).into_any()),
        },
    }
}

/// A reply frame for Python: `(agent_id, opcode, payload)`.
fn frame_tuple(reply: RawReply) -> (u32, u8, Vec<u8>) {
    (reply.header.agent_id, reply.header.opcode, reply.payload)
}

/// A Rust SDK error as the Python exception that says the same thing.
fn py_err(err: Error) -> PyErr {
    let message = err.to_string();
    match &err {
        Error::Connect { source, .. } | Error::Io { source, .. } => match source.raw_os_error() {
            // OSError(errno, text) picks the errno's subclass (FileNotFoundError, ...).
            Some(errno) => PyOSError::new_err((errno, message)),
            None if source.kind() == std::io::ErrorKind::TimedOut
                || source.kind() == std::io::ErrorKind::WouldBlock =>
            {
                PyTimeoutError::new_err(message)
            }
            None => PyOSError::new_err(message),
        },
        Error::Timeout { .. } => PyTimeoutError::new_err(message),
        Error::Protocol(_) | Error::Unusable { .. } => PyConnectionError::new_err(message),
        _ => PyValueError::new_err(message),
    }
}

/// A connection to the Clove kernel that blocks the calling thread, not the interpreter.
///
/// `Connection(path)` connects at once (raising `OSError` if it cannot). One call runs at a
/// time; calls from several threads queue on an internal lock.
#[pyclass(module = "clove_sdk._native", frozen)]
struct Connection {
    path: PathBuf,
    /// `None` once closed. Held for the whole of a call, with the GIL released.
    client: Mutex<Option<Client>>,
    /// What the getters report, updated after every call. A separate lock, held only for an
    /// instant: a getter must never wait for a call in progress while it holds the GIL.
    seen: Mutex<Seen>,
}

/// A connection's state as of its last call.
#[derive(Debug, Clone, Copy)]
struct Seen {
    agent_id: Option<u32>,
    pending: usize,
    open: bool,
}

impl Connection {
    /// Runs `f` on the open client with the GIL released.
    fn with_client<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Client) -> Result<T, Error> + Send,
    ) -> PyResult<T> {
        py.detach(|| {
            let mut guard = lock(&self.client);
            let client = guard.as_mut().ok_or_else(|| closed(&self.path))?;
            let result = f(client);
            *lock(&self.seen) = Seen {
                agent_id: client.agent_id(),
                pending: client.pending(),
                open: true,
            };
            result.map_err(py_err)
        })
    }

    fn seen(&self) -> Seen {
        *lock(&self.seen)
    }
}

/// Locks a client, even one whose previous holder panicked (the client marks itself unusable
/// when a call is abandoned, so the state inside stays truthful).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn closed(path: &std::path::Path) -> PyErr {
    PyConnectionError::new_err(format!("the connection to {} is closed", path.display()))
}

#[pymethods]
impl Connection {
    /// Connects to the kernel at `path`; `None` picks the socket the Rust SDK's rule picks
    /// ($CLOVE_SOCKET, then the kernel's default, then /tmp/clove.sock). `timeout` (seconds)
    /// bounds every read and write; `None` waits forever.
    #[new]
    #[pyo3(signature = (path=None, timeout=None))]
    fn new(py: Python<'_>, path: Option<PathBuf>, timeout: Option<f64>) -> PyResult<Self> {
        let timeout = seconds(timeout)?;
        let client = py
            .detach(|| {
                let mut client = Client::connect(path.as_deref())?;
                client.set_codec(Codec::Json);
                if timeout.is_some() {
                    client.set_timeout(timeout)?;
                }
                Ok(client)
            })
            .map_err(py_err)?;
        Ok(Connection {
            path: client.socket_path().to_path_buf(),
            client: Mutex::new(Some(client)),
            seen: Mutex::new(Seen {
                agent_id: None,
                pending: 0,
                open: true,
            }),
        })
    }

    /// The socket path this connection uses.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// The caller's id as the kernel sees it, from the last reply's header (`None` before the
    /// first reply).
    #[getter]
    fn agent_id(&self) -> Option<u32> {
        self.seen().agent_id
    }

    /// Whether the connection is open (`close` not called).
    #[getter]
    fn open(&self) -> bool {
        self.seen().open
    }

    /// Sets the read and write timeout in seconds (`None`: wait forever).
    #[pyo3(signature = (timeout))]
    fn set_timeout(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let timeout = seconds(timeout)?;
        self.with_client(py, |c| c.set_timeout(timeout))
    }

    /// Sends one request (its JSON text, encoded by the Python layer with `json.dumps` as the
    /// original SDK did; empty means `{}`) and returns the reply as a Python value (a dict, or
    /// LIST's list).
    fn call_json<'py>(
        &self,
        py: Python<'py>,
        opcode: u8,
        payload: Vec<u8>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let reply = self.with_client(py, |c| c.call_raw(Codec::Json, opcode, &payload))?;
        reply_value(py, &reply.payload)
    }

    /// Sends one frame with raw payload bytes and returns the reply frame as
    /// `(agent_id, opcode, payload)`.
    fn call(&self, py: Python<'_>, opcode: u8, payload: Vec<u8>) -> PyResult<(u32, u8, Vec<u8>)> {
        self.with_client(py, |c| c.call_raw(Codec::Json, opcode, &payload))
            .map(frame_tuple)
    }

    /// Sends one frame without waiting for its reply (see `recv`).
    fn send(&self, py: Python<'_>, opcode: u8, payload: Vec<u8>) -> PyResult<()> {
        self.with_client(py, |c| {
            c.send_frame(Codec::Json, opcode, &payload)?;
            c.flush()
        })
    }

    /// Receives the reply to the oldest request sent with `send`, as
    /// `(agent_id, opcode, payload)`.
    fn recv(&self, py: Python<'_>) -> PyResult<(u32, u8, Vec<u8>)> {
        self.with_client(py, Client::recv_frame).map(frame_tuple)
    }

    /// The number of requests sent whose replies have not been received.
    #[getter]
    fn pending(&self) -> usize {
        self.seen().pending
    }

    /// Closes the connection (idempotent), once the call in progress, if any, is done.
    fn close(&self, py: Python<'_>) {
        lock(&self.seen).open = false;
        py.detach(|| drop(lock(&self.client).take()));
    }

    fn __repr__(&self) -> String {
        let state = if self.open() { "open" } else { "closed" };
        format!("<Connection {} {state}>", self.path.display())
    }
}

/// The async client, shared by the futures of its calls.
type SharedAsync = Arc<tokio::sync::Mutex<Option<AsyncClient>>>;

/// A connection to the Clove kernel for asyncio: `await AsyncConnection.connect(path)`, then
/// `await conn.call_json(opcode, payload)`. Calls on one connection run one at a time, in the
/// order they were made.
#[pyclass(module = "clove_sdk._native", frozen)]
struct AsyncConnection {
    path: PathBuf,
    client: SharedAsync,
    /// The id from the last reply's header, readable without awaiting the client's lock.
    agent_id: Arc<Mutex<Option<u32>>>,
}

impl AsyncConnection {
    /// Runs `f` on the open client inside a future Python can await.
    fn run<'py, T, F>(&self, py: Python<'py>, f: F) -> PyResult<Bound<'py, PyAny>>
    where
        T: for<'a> IntoPyObject<'a> + Send + 'static,
        F: for<'c> FnOnce(
                &'c mut AsyncClient,
            ) -> std::pin::Pin<
                Box<dyn std::future::Future<Output = Result<T, Error>> + Send + 'c>,
            > + Send
            + 'static,
    {
        let client = Arc::clone(&self.client);
        let agent_id = Arc::clone(&self.agent_id);
        let path = self.path.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let mut guard = client.lock().await;
            let c = guard.as_mut().ok_or_else(|| closed(&path))?;
            let result = f(c).await;
            *lock(&agent_id) = c.agent_id();
            result.map_err(py_err)
        })
    }
}

#[pymethods]
impl AsyncConnection {
    /// Connects to the kernel at `path` (`None`: the Rust SDK's rule, as `Connection`).
    #[staticmethod]
    #[pyo3(signature = (path=None))]
    fn connect(py: Python<'_>, path: Option<PathBuf>) -> PyResult<Bound<'_, PyAny>> {
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let mut client = AsyncClient::connect(path.as_deref())
                .await
                .map_err(py_err)?;
            client.set_codec(Codec::Json);
            Ok(AsyncConnection {
                path: client.socket_path().to_path_buf(),
                client: Arc::new(tokio::sync::Mutex::new(Some(client))),
                agent_id: Arc::new(Mutex::new(None)),
            })
        })
    }

    /// The socket path this connection uses.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// The caller's id as the kernel sees it, from the last reply's header.
    #[getter]
    fn agent_id(&self) -> Option<u32> {
        *lock(&self.agent_id)
    }

    /// Sends one request (JSON text, as `Connection.call_json`); the awaitable gives the reply
    /// as a Python value.
    fn call_json<'py>(
        &self,
        py: Python<'py>,
        opcode: u8,
        payload: Vec<u8>,
    ) -> PyResult<Bound<'py, PyAny>> {
        // The reply becomes a Python value once the GIL is held again, after the I/O.
        self.run(py, move |c| {
            Box::pin(async move {
                c.call_raw(Codec::Json, opcode, &payload)
                    .await
                    .map(|reply| JsonReply(reply.payload))
            })
        })
    }

    /// Sends one frame with raw payload bytes; the awaitable gives `(agent_id, opcode, payload)`.
    fn call<'py>(
        &self,
        py: Python<'py>,
        opcode: u8,
        payload: Vec<u8>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, move |c| {
            Box::pin(async move {
                c.call_raw(Codec::Json, opcode, &payload)
                    .await
                    .map(frame_tuple)
            })
        })
    }

    /// Closes the connection (idempotent) once the call in progress, if any, is done.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let client = Arc::clone(&self.client);
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            drop(client.lock().await.take());
            Ok(())
        })
    }

    fn __repr__(&self) -> String {
        format!("<AsyncConnection {}>", self.path.display())
    }
}

/// A JSON reply payload on its way from the tokio runtime to Python.
struct JsonReply(Vec<u8>);

impl<'py> IntoPyObject<'py> for JsonReply {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        reply_value(py, &self.0)
    }
}

/// Seconds from Python as a timeout: `None` is no timeout; zero, negative or NaN is refused.
fn seconds(timeout: Option<f64>) -> PyResult<Option<Duration>> {
    match timeout {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(PyValueError::new_err(format!(
            "timeout must be a positive number of seconds or None, not {s}"
        ))),
    }
}

/// The socket the Rust SDK would pick for `explicit`: `explicit`, then $CLOVE_SOCKET, then the
/// kernel's default main socket, then /tmp/clove.sock if only that one exists.
#[pyfunction]
#[pyo3(signature = (explicit=None))]
fn resolve_socket(explicit: Option<PathBuf>) -> PathBuf {
    clove_sdk::resolve_socket(explicit.as_deref())
}

/// The error reply the kernel would send for `opcode`, as a dict: `success: False`, `error`,
/// `code`, and the empty fields the original SDK expects on that opcode's errors (READ's
/// `content` and `size`, EXEC's `stdout`, `stderr` and `exit_code`, ...). The client uses it to
/// report a failure of the connection in the same shape as a refusal by the kernel.
#[pyfunction]
fn error_reply<'py>(
    py: Python<'py>,
    opcode: u8,
    code: &str,
    message: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let err = WireError::new(clove_sdk::ErrorCode::parse(code), message);
    pythonize::pythonize(py, &err.to_json(opcode)).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// Every opcode the ABI assigns, as `(name, value)` pairs in numeric order (`("HELLO", 0xFE)`).
#[pyfunction]
fn opcodes() -> Vec<(&'static str, u8)> {
    Opcode::ALL
        .iter()
        .map(|op| (op.name(), op.as_u8()))
        .collect()
}

/// The `clove_sdk._native` module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Connection>()?;
    m.add_class::<AsyncConnection>()?;
    m.add_function(wrap_pyfunction!(resolve_socket, m)?)?;
    m.add_function(wrap_pyfunction!(error_reply, m)?)?;
    m.add_function(wrap_pyfunction!(opcodes, m)?)?;
    m.add("COMPAT_SOCKET", clove_sdk::paths::COMPAT_SOCKET)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The conversions that touch Python objects are tested from Python (sdk-python/tests);
    // these are the parts that do not need an interpreter.

    #[test]
    fn timeouts_are_positive_seconds_or_none() {
        assert_eq!(seconds(None).ok(), Some(None));
        assert_eq!(
            seconds(Some(1.5)).ok(),
            Some(Some(Duration::from_millis(1500)))
        );
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(seconds(Some(bad)).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn every_opcode_is_listed_once_in_order() {
        let ops = opcodes();
        assert_eq!(ops.len(), Opcode::ALL.len());
        assert!(ops.windows(2).all(|w| w[0].1 < w[1].1));
        assert!(ops.contains(&("HELLO", 0xFE)));
    }
}
