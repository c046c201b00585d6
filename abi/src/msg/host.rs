//! EXEC, READ, WRITE, HTTP: reaching the host (commands, files, network).
//!
//! EXEC and HTTP may run async (`async: true`): the kernel answers at once with an accept
//! reply (`{success: true, async: true, request_id, status: "accepted"}`, built by each
//! reply's `accepted()`) and queues the real reply for ASYNC_POLL. Our extensions (EXEC
//! `argv`, `signal`, `timed_out`; READ `offset`, `limit`; HTTP reply `headers`) are all
//! optional, so the original SDK's requests mean exactly what they meant there.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::msg::asyncs::ASYNC_ACCEPTED;
use crate::msg::syscall;

#[cfg(test)]
use crate::msg::lifecycle::finite_f64;

/// EXEC and HTTP `timeout` default: 30 seconds.
pub const DEFAULT_HOST_TIMEOUT: f64 = 30.0;

fn default_timeout() -> f64 {
    DEFAULT_HOST_TIMEOUT
}

/// A `timeout` in seconds as a [`Duration`]; `None` when it is negative, NaN or too large
/// to represent (the kernel rejects those).
fn seconds(timeout: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(timeout).ok()
}

// ---------------------------------------------------------------- EXEC

/// What EXEC runs: a shell command line, or an argument vector run without a shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExecCommand<'a> {
    /// `command`, run as `/bin/sh -c <command>` (the original's way).
    Shell(&'a str),
    /// `argv` (Extension): `argv[0]` is the program, run directly without a shell. May be
    /// empty; the kernel rejects that.
    Argv(&'a [String]),
}

/// EXEC `{command, argv?, cwd?, timeout, async, request_id?}`: run a command on the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ExecRequest {
    /// The shell command line (default empty).
    #[serde(default)]
    pub command: String,
    /// Extension: the program and its arguments, run without a shell; wins over `command`.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub argv: Option<Vec<String>>,
    /// The working directory; absent: the kernel's choice for the caller.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub cwd: Option<String>,
    /// Seconds before the command is killed (default 30; fractions allowed).
    #[serde(default = "default_timeout")]
    #[cfg_attr(test, proptest(strategy = "finite_f64()"))]
    pub timeout: f64,
    /// Answer at once with an accept reply and queue the real one for ASYNC_POLL (default
    /// false).
    #[serde(default, rename = "async")]
    pub is_async: bool,
    /// The id for the async result; absent: the kernel picks one (only used with `async`).
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub request_id: Option<u64>,
    /// Extension: environment variables for the command, on top of the kernel's clean
    /// environment (`PATH`, `HOME`, `USER`, `LANG`).
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub env: Option<BTreeMap<String, String>>,
}

impl Default for ExecRequest {
    /// Empty `command`, `timeout` 30, synchronous, every option absent.
    fn default() -> Self {
        ExecRequest {
            command: String::new(),
            argv: None,
            cwd: None,
            timeout: DEFAULT_HOST_TIMEOUT,
            is_async: false,
            request_id: None,
            env: None,
        }
    }
}

impl ExecRequest {
    /// A synchronous request for the shell command line `command`, every other field at its
    /// default.
    pub fn new(command: impl Into<String>) -> Self {
        ExecRequest {
            command: command.into(),
            ..ExecRequest::default()
        }
    }

    /// What to run: `argv` when given (even empty), else `command`.
    pub fn invocation(&self) -> ExecCommand<'_> {
        match &self.argv {
            Some(argv) => ExecCommand::Argv(argv),
            None => ExecCommand::Shell(&self.command),
        }
    }

    /// `timeout` as a [`Duration`]; `None` when it is negative, NaN or too large.
    pub fn timeout(&self) -> Option<Duration> {
        seconds(self.timeout)
    }
}

/// EXEC reply: `{success, stdout, stderr, exit_code}`, or the async accept reply (see
/// [`ExecReply::accepted`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ExecReply {
    /// `exit_code == 0` (true in an accept reply).
    pub success: bool,
    /// What the command wrote to stdout (empty in an accept reply; read as empty when absent,
    /// as in the original's accept reply).
    #[serde(default)]
    pub stdout: String,
    /// What the command wrote to stderr (empty in an accept reply; read as empty when absent).
    #[serde(default)]
    pub stderr: String,
    /// The exit status; -1 when the command was killed by a signal or the timeout (0 in an
    /// accept reply; read as 0 when absent).
    #[serde(default)]
    pub exit_code: i32,
    /// Extension: the signal that killed the command; absent when it exited.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub signal: Option<i32>,
    /// Extension: `true` when the command was killed because `timeout` ran out.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub timed_out: Option<bool>,
    /// `true` in an async accept reply; absent otherwise.
    #[serde(
        default,
        rename = "async",
        skip_serializing_if = "crate::codec::skip_none"
    )]
    pub is_async: Option<bool>,
    /// The id to find the result under in ASYNC_POLL; only in an accept reply.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub request_id: Option<u64>,
    /// `"accepted"` in an accept reply; absent otherwise.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub status: Option<String>,
    /// Extension: `true` when stdout or stderr was longer than the kernel keeps (the rest was
    /// read and dropped); absent otherwise.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub truncated: Option<bool>,
}

impl ExecReply {
    /// The reply for a command that ran: `success` is `exit_code == 0`, no extensions.
    pub fn completed(stdout: impl Into<String>, stderr: impl Into<String>, exit_code: i32) -> Self {
        ExecReply {
            success: exit_code == 0,
            stdout: stdout.into(),
            stderr: stderr.into(),
            exit_code,
            ..ExecReply::default()
        }
    }

    /// The accept reply to an async EXEC: `{success: true, stdout: "", stderr: "",
    /// exit_code: 0, async: true, request_id, status: "accepted"}`.
    pub fn accepted(request_id: u64) -> Self {
        ExecReply {
            success: true,
            is_async: Some(true),
            request_id: Some(request_id),
            status: Some(ASYNC_ACCEPTED.to_owned()),
            ..ExecReply::default()
        }
    }

    /// This is an async accept reply (`async: true`), not the command's result.
    pub fn is_accepted(&self) -> bool {
        self.is_async == Some(true)
    }
}

// ---------------------------------------------------------------- READ, WRITE

/// READ `{path, offset?, limit?}`: read a host file as text.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ReadRequest {
    /// The file's path (required).
    pub path: String,
    /// Extension: start at this byte; absent: 0.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub offset: Option<u64>,
    /// Extension: read at most this many bytes; absent: to the end of the file.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub limit: Option<u64>,
}

impl ReadRequest {
    /// A request for the whole file at `path`.
    pub fn new(path: impl Into<String>) -> Self {
        ReadRequest {
            path: path.into(),
            ..ReadRequest::default()
        }
    }
}

/// READ reply: `{success, content, size}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ReadReply {
    /// The file was read.
    pub success: bool,
    /// The bytes read, as text.
    pub content: String,
    /// The number of bytes read (the length of `content` in UTF-8).
    pub size: u64,
}

/// WRITE `mode`: replace the file or add to its end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(rename_all = "lowercase")]
pub enum WriteMode {
    /// `"write"` (the default): create or truncate, then write.
    #[default]
    Write,
    /// `"append"`: create if missing, then write at the end.
    Append,
}

impl WriteMode {
    /// Every mode, the default first.
    pub const ALL: [WriteMode; 2] = [WriteMode::Write, WriteMode::Append];

    /// The wire spelling: `write`, `append`.
    pub const fn as_str(self) -> &'static str {
        match self {
            WriteMode::Write => "write",
            WriteMode::Append => "append",
        }
    }

    /// The mode spelled `text` exactly as on the wire; `None` for anything else.
    pub fn parse(text: &str) -> Option<WriteMode> {
        WriteMode::ALL
            .into_iter()
            .find(|mode| mode.as_str() == text)
    }
}

/// WRITE `{path, content, mode}`: write text to a host file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct WriteRequest {
    /// The file's path (required).
    pub path: String,
    /// The text to write (required).
    pub content: String,
    /// `write` (default) or `append`.
    #[serde(default)]
    pub mode: WriteMode,
    /// Extension: create the missing parent directories (each checked like the file).
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub create_dirs: Option<bool>,
}

/// WRITE reply: `{success, bytes_written}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct WriteReply {
    /// The whole content was written.
    pub success: bool,
    /// Bytes written.
    pub bytes_written: u64,
}

// ---------------------------------------------------------------- HTTP

/// HTTP `method` default: `GET`.
pub const DEFAULT_HTTP_METHOD: &str = "GET";

fn default_method() -> String {
    DEFAULT_HTTP_METHOD.to_owned()
}

/// `headers`: a JSON `null` (Python's `None`) means no headers. postcard always carries the
/// map itself.
fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    if d.is_human_readable() {
        Option::<BTreeMap<String, String>>::deserialize(d).map(Option::unwrap_or_default)
    } else {
        BTreeMap::deserialize(d)
    }
}

/// HTTP `{url, method, headers, body?, timeout, async, request_id?}`: make an HTTP request
/// (directly, never through a shell).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct HttpRequest {
    /// The URL (required).
    pub url: String,
    /// The method (default `GET`); any string here, the kernel decides which it allows.
    #[serde(default = "default_method")]
    pub method: String,
    /// Request headers, name to value (default none; `null` means none).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub headers: BTreeMap<String, String>,
    /// The request body; absent: none.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub body: Option<String>,
    /// Seconds before the request is abandoned (default 30; fractions allowed).
    #[serde(default = "default_timeout")]
    #[cfg_attr(test, proptest(strategy = "finite_f64()"))]
    pub timeout: f64,
    /// Answer at once with an accept reply and queue the real one for ASYNC_POLL (default
    /// false).
    #[serde(default, rename = "async")]
    pub is_async: bool,
    /// The id for the async result; absent: the kernel picks one (only used with `async`).
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub request_id: Option<u64>,
}

impl Default for HttpRequest {
    /// Empty `url`, `GET`, no headers or body, `timeout` 30, synchronous.
    fn default() -> Self {
        HttpRequest {
            url: String::new(),
            method: default_method(),
            headers: BTreeMap::new(),
            body: None,
            timeout: DEFAULT_HOST_TIMEOUT,
            is_async: false,
            request_id: None,
        }
    }
}

impl HttpRequest {
    /// A synchronous `GET` of `url`, every other field at its default.
    pub fn get(url: impl Into<String>) -> Self {
        HttpRequest {
            url: url.into(),
            ..HttpRequest::default()
        }
    }

    /// `timeout` as a [`Duration`]; `None` when it is negative, NaN or too large.
    pub fn timeout(&self) -> Option<Duration> {
        seconds(self.timeout)
    }
}

/// HTTP reply: `{success, status_code, body}`, or the async accept reply (see
/// [`HttpReply::accepted`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct HttpReply {
    /// A response arrived, whatever its status (true in an accept reply); a failed connection,
    /// a bad URL or the timeout is an error reply.
    pub success: bool,
    /// The response's real status code (0 in an accept reply; read as 0 when absent, as in
    /// the original's accept reply).
    #[serde(default)]
    pub status_code: u16,
    /// The response body as text (empty in an accept reply; read as empty when absent).
    #[serde(default)]
    pub body: String,
    /// Extension: the response headers, names in lower case.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub headers: Option<BTreeMap<String, String>>,
    /// `true` in an async accept reply; absent otherwise.
    #[serde(
        default,
        rename = "async",
        skip_serializing_if = "crate::codec::skip_none"
    )]
    pub is_async: Option<bool>,
    /// The id to find the result under in ASYNC_POLL; only in an accept reply.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub request_id: Option<u64>,
    /// `"accepted"` in an accept reply; absent otherwise.
    #[serde(default, skip_serializing_if = "crate::codec::skip_none")]
    pub status: Option<String>,
}

impl HttpReply {
    /// The accept reply to an async HTTP: `{success: true, status_code: 0, body: "",
    /// async: true, request_id, status: "accepted"}`.
    pub fn accepted(request_id: u64) -> Self {
        HttpReply {
            success: true,
            is_async: Some(true),
            request_id: Some(request_id),
            status: Some(ASYNC_ACCEPTED.to_owned()),
            ..HttpReply::default()
        }
    }

    /// This is an async accept reply (`async: true`), not the response.
    pub fn is_accepted(&self) -> bool {
        self.is_async == Some(true)
    }
}

syscall! {
    ExecRequest => Exec, ExecReply;
    ReadRequest => Read, ReadReply;
    WriteRequest => Write, WriteReply;
    HttpRequest => Http, HttpReply;
}
