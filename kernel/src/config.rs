//! The kernel's configuration: built once at start from, in rising precedence, the embedded
//! defaults, a TOML file (`--config`, else /etc/clove/clove.toml when present), `CLOVE_*`
//! environment variables and command-line flags; then validated. Nothing reads configuration
//! anywhere else, so what `--print-config` shows is what runs.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::{Deserialize, Serialize};

use clove_abi::paths;

use crate::host::http::Cidr;

pub mod llm;
pub use llm::LlmConfig;

/// The system-wide config file, read when present and no `--config` is given.
pub const SYSTEM_CONFIG: &str = "/etc/clove/clove.toml";

/// Command-line flags. Every one can also come from its `CLOVE_*` variable.
#[derive(Debug, Parser)]
#[command(
    name = "clove-kernel",
    version,
    about = "The Clove kernel: runs AI agents as isolated, supervised Linux processes and serves \
             their syscalls on a Unix socket",
    after_help = "Precedence: flags > CLOVE_* environment > config file > built-in defaults.\n\
                  Defaults as root: socket /run/clove/clove.sock, state dir /var/lib/clove;\n\
                  otherwise $XDG_RUNTIME_DIR/clove/clove.sock and $XDG_STATE_HOME/clove.\n\
                  The compat socket /tmp/clove.sock serves scripts written for the original Clove.\n\n\
                  Examples:\n  \
                  clove-kernel                                   # defaults, logs to stderr\n  \
                  clove-kernel --socket /tmp/k.sock --state-dir /tmp/k --no-compat-socket\n  \
                  clove-kernel --print-config                    # show the effective config"
)]
pub struct Flags {
    /// TOML config file [default: /etc/clove/clove.toml when it exists]
    #[arg(long, env = "CLOVE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Main socket path
    #[arg(long, env = "CLOVE_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Compat socket path for the original's scripts [default: /tmp/clove.sock]
    #[arg(long, env = "CLOVE_COMPAT_SOCKET", value_name = "PATH")]
    pub compat_socket: Option<PathBuf>,

    /// Do not listen on the compat socket
    #[arg(long, env = "CLOVE_NO_COMPAT_SOCKET", conflicts_with = "compat_socket")]
    pub no_compat_socket: bool,

    /// State directory (locked: one kernel per state dir)
    #[arg(long, env = "CLOVE_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Maximum open client connections; more wait in the listen backlog [default: 4096]
    #[arg(long, env = "CLOVE_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Maximum inbound payload in bytes [default: 1048576, the original's 1 MiB]
    #[arg(long, env = "CLOVE_MAX_FRAME", value_name = "BYTES")]
    pub max_frame: Option<u64>,

    /// Time a frame may take to arrive once its first byte has [default: 10000]
    #[arg(long, env = "CLOVE_FRAME_TIMEOUT_MS", value_name = "MS")]
    pub frame_timeout_ms: Option<u64>,

    /// Log format [default: human]
    #[arg(long, env = "CLOVE_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Log filter: a level (info, debug, ...) or tracing directives [default: info]
    #[arg(long, env = "CLOVE_LOG", value_name = "FILTER")]
    pub log_level: Option<String>,

    /// The Python interpreter agents run with (resolved once at start by running it)
    /// [default: python3]
    #[arg(long, env = "CLOVE_PYTHON", value_name = "PROGRAM")]
    pub python: Option<String>,

    /// Time a killed agent gets between SIGTERM and SIGKILL, unless SPAWN set `grace_ms`
    /// [default: 3000]
    #[arg(long, env = "CLOVE_KILL_GRACE_MS", value_name = "MS")]
    pub kill_grace_ms: Option<u64>,

    /// Most agents alive at once; SPAWN beyond it answers `limit_exceeded` [default: 1024]
    #[arg(long, env = "CLOVE_MAX_AGENTS", value_name = "N")]
    pub max_agents: Option<usize>,

    /// How long an exited agent's directory (its output log and work dir) is kept
    /// [default: 86400, one day]
    #[arg(long, env = "CLOVE_AGENT_RETENTION_SECS", value_name = "SECS")]
    pub agent_retention_secs: Option<u64>,

    /// Most messages waiting in one mailbox; SEND to a full one fails or waits [default: 1024]
    #[arg(long, env = "CLOVE_MAILBOX_MESSAGES", value_name = "N")]
    pub mailbox_messages: Option<usize>,

    /// Most bytes of messages waiting in one mailbox [default: 8388608, 8 MiB]
    #[arg(long, env = "CLOVE_MAILBOX_BYTES", value_name = "BYTES")]
    pub mailbox_bytes: Option<usize>,

    /// Most events queued per subscriber; beyond it the oldest are dropped (and counted)
    /// [default: 1024]
    #[arg(long, env = "CLOVE_EVENT_QUEUE", value_name = "N")]
    pub event_queue: Option<usize>,

    /// Largest value STORE accepts, in bytes of its JSON text [default: 262144, 256 KiB]
    #[arg(long, env = "CLOVE_STATE_MAX_VALUE", value_name = "BYTES")]
    pub state_max_value: Option<usize>,

    /// Most bytes the state store holds, keys and values of every scope [default: 268435456,
    /// 256 MiB]
    #[arg(long, env = "CLOVE_STATE_MAX_BYTES", value_name = "BYTES")]
    pub state_max_bytes: Option<u64>,

    /// Size at which the audit log file is rotated [default: 16777216, 16 MiB]
    #[arg(long, env = "CLOVE_AUDIT_MAX_FILE_BYTES", value_name = "BYTES")]
    pub audit_max_file_bytes: Option<u64>,

    /// Audit log files kept, the live one included; the oldest is removed beyond it
    /// [default: 8]
    #[arg(long, env = "CLOVE_AUDIT_KEEP_FILES", value_name = "N")]
    pub audit_keep_files: Option<u32>,
    // HTTP and async results (kernel/src/host/http.rs, kernel/src/asyncs.rs).
    /// Address ranges HTTP may reach although they are loopback, link-local, private or
    /// otherwise special, as CIDRs (`127.0.0.1/32`); repeat or separate with commas
    /// [default: none]
    #[arg(
        long,
        env = "CLOVE_HTTP_ALLOW_PRIVATE",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub http_allow_private: Option<Vec<String>>,

    /// Fixed answers for host names, used before the system resolver (a testing and
    /// operations override; the address policy still applies): NAME=IP; repeat or separate
    /// with commas [default: none]
    #[arg(
        long,
        env = "CLOVE_HTTP_RESOLVE",
        value_name = "NAME=IP",
        value_delimiter = ','
    )]
    pub http_resolve: Option<Vec<String>>,

    /// Largest HTTP response body, in bytes; a larger one is a `limit_exceeded` error
    /// [default: 10485760, 10 MiB]
    #[arg(long, env = "CLOVE_HTTP_MAX_RESPONSE", value_name = "BYTES")]
    pub http_max_response: Option<u64>,

    /// Longest an HTTP request may take, whatever its `timeout` asks [default: 300]
    #[arg(long, env = "CLOVE_HTTP_MAX_TIMEOUT_SECS", value_name = "SECS")]
    pub http_max_timeout_secs: Option<u64>,

    /// Most async requests (in flight plus results not yet taken by ASYNC_POLL) per caller;
    /// beyond it an async request answers `limit_exceeded` [default: 256]
    #[arg(long, env = "CLOVE_ASYNC_RESULTS", value_name = "N")]
    pub async_results: Option<usize>,

    // THINK (kernel/src/llm/); the rest of the LLM settings are in the file's [llm] table.
    /// The LLM provider THINK uses by default: openai, gemini, anthropic, simulated, or a
    /// provider configured in [llm.providers.NAME] [default: the first of gemini, anthropic,
    /// openai whose key is set in the environment (GEMINI_API_KEY or GOOGLE_API_KEY,
    /// ANTHROPIC_API_KEY, OPENAI_API_KEY), else simulated]
    #[arg(long, env = "CLOVE_LLM_PROVIDER", value_name = "NAME")]
    pub llm_provider: Option<String>,

    /// The model THINK uses when a request names none [default: the provider's]
    #[arg(long, env = "CLOVE_LLM_MODEL", value_name = "MODEL")]
    pub llm_model: Option<String>,

    /// The default provider's base URL, e.g. http://127.0.0.1:11434/v1 for Ollama with
    /// --llm-provider openai [default: the provider's public endpoint]
    #[arg(long, env = "CLOVE_LLM_BASE_URL", value_name = "URL")]
    pub llm_base_url: Option<String>,

    /// How THINK requests of competing agents are ordered: vtc (fair share of tokens),
    /// fifo, round_robin [default: vtc]
    #[arg(long, env = "CLOVE_LLM_SCHEDULER", value_name = "POLICY")]
    pub llm_scheduler: Option<String>,

    /// Most LLM calls in flight at once, all agents together [default: 4]
    #[arg(long, env = "CLOVE_LLM_MAX_IN_FLIGHT", value_name = "N")]
    pub llm_max_in_flight: Option<usize>,

    /// Serve Prometheus metrics on http://ADDR/metrics (an IP and a port; port 0 picks one,
    /// written to <state dir>/metrics.addr). Off unless given; anything but a loopback
    /// address is logged as a warning: the endpoint has no authentication and names agents
    /// [default: off]
    #[arg(long, env = "CLOVE_METRICS_ADDR", value_name = "IP:PORT")]
    pub metrics_addr: Option<String>,

    /// Print the effective configuration as TOML and exit
    #[arg(long)]
    pub print_config: bool,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    Human,
    /// One JSON object per line.
    Json,
}

/// `compat_socket` in the file: a path, or `false` to turn it off (`true` = the default path).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum CompatSetting {
    Enabled(bool),
    Path(PathBuf),
}

/// The config file's keys: the long flags in snake_case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    socket: Option<PathBuf>,
    compat_socket: Option<CompatSetting>,
    state_dir: Option<PathBuf>,
    max_connections: Option<usize>,
    max_frame: Option<u64>,
    frame_timeout_ms: Option<u64>,
    log_format: Option<LogFormat>,
    log_level: Option<String>,
    python: Option<String>,
    kill_grace_ms: Option<u64>,
    agent_retention_secs: Option<u64>,
    max_agents: Option<usize>,
    mailbox_messages: Option<usize>,
    mailbox_bytes: Option<usize>,
    event_queue: Option<usize>,
    state_max_value: Option<usize>,
    state_max_bytes: Option<u64>,
    audit_max_file_bytes: Option<u64>,
    audit_keep_files: Option<u32>,
    // HTTP and async results.
    http_allow_private: Option<Vec<String>>,
    http_resolve: Option<BTreeMap<String, OneOrMany>>,
    http_max_response: Option<u64>,
    http_max_timeout_secs: Option<u64>,
    async_results: Option<usize>,
    metrics_addr: Option<String>,
    llm: Option<llm::FileLlm>,
}

/// `http_resolve` values in the file: one address or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// The effective, validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Main socket.
    pub socket: PathBuf,
    /// Compat socket, unless turned off.
    #[serde(serialize_with = "ser_compat")]
    pub compat_socket: Option<PathBuf>,
    /// State directory.
    pub state_dir: PathBuf,
    /// Maximum open client connections.
    pub max_connections: usize,
    /// Maximum inbound payload in bytes.
    pub max_frame: u64,
    /// Time a frame may take once its first byte arrived.
    #[serde(rename = "frame_timeout_ms", serialize_with = "ser_ms")]
    pub frame_timeout: Duration,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_level: String,
    /// The agents' Python interpreter as configured (a name on PATH or a path).
    pub python: String,
    /// Default SIGTERM-to-SIGKILL grace of KILL.
    #[serde(rename = "kill_grace_ms", serialize_with = "ser_ms")]
    pub kill_grace: Duration,
    /// Most agents alive at once.
    pub max_agents: usize,
    /// How long an exited agent's directory is kept.
    #[serde(rename = "agent_retention_secs", serialize_with = "ser_secs")]
    pub agent_retention: Duration,
    /// Most messages waiting in one mailbox.
    pub mailbox_messages: usize,
    /// Most bytes waiting in one mailbox.
    pub mailbox_bytes: usize,
    /// Most events queued per subscriber.
    pub event_queue: usize,
    /// Largest value STORE accepts (bytes of JSON text).
    pub state_max_value: usize,
    /// Most bytes the state store holds.
    pub state_max_bytes: u64,
    /// Size at which the audit log file is rotated.
    pub audit_max_file_bytes: u64,
    /// Audit log files kept, the live one included.
    pub audit_keep_files: u32,
    /// HTTP: special address ranges allowed after all.
    pub http_allow_private: Vec<Cidr>,
    /// HTTP: fixed answers for host names, before the system resolver.
    pub http_resolve: BTreeMap<String, Vec<IpAddr>>,
    /// HTTP: largest response body in bytes.
    pub http_max_response: u64,
    /// HTTP: longest a request may take.
    #[serde(rename = "http_max_timeout_secs", serialize_with = "ser_secs")]
    pub http_max_timeout: Duration,
    /// Most async requests in flight plus results waiting, per caller.
    pub async_results: usize,
    /// Where the Prometheus endpoint listens; `None` (the default): no endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<SocketAddr>,
    /// THINK: providers, models, the scheduler (`[llm]`).
    pub llm: LlmConfig,
}

fn ser_compat<S: serde::Serializer>(v: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(p) => p.serialize(s),
        None => s.serialize_bool(false),
    }
}

fn ser_ms<S: serde::Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(v.as_millis() as u64)
}

fn ser_secs<S: serde::Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(v.as_secs())
}

/// A configuration that cannot run. The message is one line, naming the setting and the cause.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

/// The identity the defaults depend on: who runs the kernel and their directories.
#[derive(Debug, Clone)]
pub struct Host {
    /// Effective uid.
    pub uid: u32,
    /// `$XDG_RUNTIME_DIR`.
    pub runtime_dir: Option<PathBuf>,
    /// `$XDG_STATE_HOME`.
    pub state_home: Option<PathBuf>,
    /// `$HOME`.
    pub home: Option<PathBuf>,
}

impl Host {
    /// The real host's values.
    pub fn current() -> Host {
        let path = |k: &str| {
            std::env::var_os(k)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
        };
        Host {
            uid: nix::unistd::geteuid().as_raw(),
            runtime_dir: path("XDG_RUNTIME_DIR"),
            state_home: path("XDG_STATE_HOME"),
            home: path("HOME"),
        }
    }

    fn default_state_dir(&self) -> PathBuf {
        paths::default_state_dir(self.uid, self.state_home.as_deref(), self.home.as_deref())
    }
}

/// Builds the effective configuration from flags (which already carry the environment),
/// the config file and the defaults.
pub fn load(flags: &Flags, host: &Host) -> Result<Config, ConfigError> {
    let file = match &flags.config {
        Some(path) => read_file(path)?,
        None if Path::new(SYSTEM_CONFIG).exists() => read_file(Path::new(SYSTEM_CONFIG))?,
        None => FileConfig::default(),
    };

    let socket = flags
        .socket
        .clone()
        .or(file.socket)
        .unwrap_or_else(|| paths::default_socket(host.uid, host.runtime_dir.as_deref()));
    let compat_socket = if flags.no_compat_socket {
        None
    } else if let Some(p) = &flags.compat_socket {
        Some(p.clone())
    } else {
        match file.compat_socket {
            Some(CompatSetting::Enabled(false)) => None,
            Some(CompatSetting::Path(p)) => Some(p),
            Some(CompatSetting::Enabled(true)) | None => Some(PathBuf::from(paths::COMPAT_SOCKET)),
        }
    };
    let config = Config {
        socket,
        compat_socket,
        state_dir: flags
            .state_dir
            .clone()
            .or(file.state_dir)
            .unwrap_or_else(|| host.default_state_dir()),
        max_connections: flags
            .max_connections
            .or(file.max_connections)
            .unwrap_or(4096),
        max_frame: flags
            .max_frame
            .or(file.max_frame)
            .unwrap_or(clove_abi::DEFAULT_MAX_PAYLOAD),
        frame_timeout: Duration::from_millis(
            flags
                .frame_timeout_ms
                .or(file.frame_timeout_ms)
                .unwrap_or(10_000),
        ),
        log_format: flags
            .log_format
            .or(file.log_format)
            .unwrap_or(LogFormat::Human),
        log_level: flags
            .log_level
            .clone()
            .or(file.log_level)
            .unwrap_or_else(|| "info".into()),
        python: flags
            .python
            .clone()
            .or(file.python)
            .unwrap_or_else(|| clove_abi::msg::DEFAULT_PYTHON.into()),
        kill_grace: Duration::from_millis(
            flags.kill_grace_ms.or(file.kill_grace_ms).unwrap_or(3_000),
        ),
        max_agents: flags.max_agents.or(file.max_agents).unwrap_or(1024),
        agent_retention: Duration::from_secs(
            flags
                .agent_retention_secs
                .or(file.agent_retention_secs)
                .unwrap_or(86_400),
        ),
        mailbox_messages: flags
            .mailbox_messages
            .or(file.mailbox_messages)
            .unwrap_or(1024),
        mailbox_bytes: flags
            .mailbox_bytes
            .or(file.mailbox_bytes)
            .unwrap_or(8 << 20),
        event_queue: flags.event_queue.or(file.event_queue).unwrap_or(1024),
        state_max_value: flags
            .state_max_value
            .or(file.state_max_value)
            .unwrap_or(256 << 10),
        state_max_bytes: flags
            .state_max_bytes
            .or(file.state_max_bytes)
            .unwrap_or(256 << 20),
        audit_max_file_bytes: flags
            .audit_max_file_bytes
            .or(file.audit_max_file_bytes)
            .unwrap_or(16 << 20),
        audit_keep_files: flags
            .audit_keep_files
            .or(file.audit_keep_files)
            .unwrap_or(8),
        http_allow_private: flags
            .http_allow_private
            .clone()
            .or(file.http_allow_private)
            .unwrap_or_default()
            .iter()
            .map(|c| Cidr::parse(c).map_err(|e| ConfigError(format!("http_allow_private: {e}"))))
            .collect::<Result<_, _>>()?,
        http_resolve: match &flags.http_resolve {
            Some(pairs) => resolve_flags(pairs)?,
            None => resolve_file(file.http_resolve.unwrap_or_default())?,
        },
        http_max_response: flags
            .http_max_response
            .or(file.http_max_response)
            .unwrap_or(10 << 20),
        http_max_timeout: Duration::from_secs(
            flags
                .http_max_timeout_secs
                .or(file.http_max_timeout_secs)
                .unwrap_or(300),
        ),
        async_results: flags.async_results.or(file.async_results).unwrap_or(256),
        metrics_addr: flags
            .metrics_addr
            .clone()
            .or(file.metrics_addr)
            .map(|a| metrics_addr(&a))
            .transpose()?,
        llm: llm::load(
            file.llm.unwrap_or_default(),
            &llm::LlmFlags {
                provider: flags.llm_provider.clone(),
                model: flags.llm_model.clone(),
                base_url: flags.llm_base_url.clone(),
                scheduler: flags.llm_scheduler.clone(),
                max_in_flight: flags.llm_max_in_flight,
            },
            &|var| std::env::var(var).ok(),
        )?,
    };
    config.validate()?;
    Ok(config)
}

/// `metrics_addr`: an IP address and a port (`127.0.0.1:9464`, `[::1]:9464`). No host names:
/// what the endpoint binds to must not depend on a resolver.
fn metrics_addr(text: &str) -> Result<SocketAddr, ConfigError> {
    text.trim().parse().map_err(|e| {
        ConfigError(format!(
            "metrics_addr {text:?}: expected IP:PORT, e.g. 127.0.0.1:9464 or [::1]:9464 ({e})"
        ))
    })
}

/// `http_resolve` from flags: `NAME=IP` pairs; a name given twice gets every address.
fn resolve_flags(pairs: &[String]) -> Result<BTreeMap<String, Vec<IpAddr>>, ConfigError> {
    let mut map: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for pair in pairs.iter().filter(|p| !p.trim().is_empty()) {
        let (name, ip) = pair
            .split_once('=')
            .ok_or_else(|| ConfigError(format!("http_resolve {pair:?}: expected NAME=IP")))?;
        map.entry(resolve_name(name)?)
            .or_default()
            .push(resolve_ip(name, ip)?);
    }
    Ok(map)
}

/// `http_resolve` from the file: a table of name to address or list of addresses.
fn resolve_file(
    table: BTreeMap<String, OneOrMany>,
) -> Result<BTreeMap<String, Vec<IpAddr>>, ConfigError> {
    let mut map: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for (name, ips) in table {
        let ips = match ips {
            OneOrMany::One(ip) => vec![ip],
            OneOrMany::Many(ips) => ips,
        };
        let addrs = ips
            .iter()
            .map(|ip| resolve_ip(&name, ip))
            .collect::<Result<Vec<_>, _>>()?;
        map.entry(resolve_name(&name)?).or_default().extend(addrs);
    }
    Ok(map)
}

fn resolve_name(name: &str) -> Result<String, ConfigError> {
    let name = crate::host::http::normalize_host(name);
    if name.is_empty() {
        return Err(ConfigError("http_resolve: an empty host name".into()));
    }
    Ok(name)
}

fn resolve_ip(name: &str, ip: &str) -> Result<IpAddr, ConfigError> {
    ip.trim().parse().map_err(|e| {
        ConfigError(format!(
            "http_resolve {:?}: {ip:?} is not an IP address: {e}",
            name.trim()
        ))
    })
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("read config {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| {
        // toml's message spans several lines (a source excerpt); keep the first and the cause.
        let msg = e.message().replace('\n', " ");
        match e.span() {
            Some(span) => {
                let line = text[..span.start].matches('\n').count() + 1;
                ConfigError(format!("config {} line {line}: {msg}", path.display()))
            }
            None => ConfigError(format!("config {}: {msg}", path.display())),
        }
    })
}

/// Longest path a Unix socket address holds (`sun_path` is 108 bytes with the final NUL).
const SUN_PATH_MAX: usize = 107;

impl Config {
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError(m));
        for (name, path) in std::iter::once(("socket", &self.socket))
            .chain(self.compat_socket.iter().map(|p| ("compat_socket", p)))
        {
            if !path.is_absolute() {
                return bad(format!(
                    "{name} {}: must be an absolute path",
                    path.display()
                ));
            }
            if path.as_os_str().len() > SUN_PATH_MAX {
                return bad(format!(
                    "{name} {}: longer than the {SUN_PATH_MAX} bytes a Unix socket path can hold",
                    path.display()
                ));
            }
        }
        if self.compat_socket.as_ref() == Some(&self.socket) {
            return bad(format!(
                "compat_socket {}: the same path as socket",
                self.socket.display()
            ));
        }
        if !self.state_dir.is_absolute() {
            return bad(format!(
                "state_dir {}: must be an absolute path",
                self.state_dir.display()
            ));
        }
        if self.max_connections == 0 {
            return bad("max_connections: must be at least 1".into());
        }
        if self.max_frame == 0 || self.max_frame > 1 << 30 {
            return bad(format!(
                "max_frame {}: must be between 1 and 1073741824 bytes",
                self.max_frame
            ));
        }
        if self.frame_timeout.is_zero() {
            return bad("frame_timeout_ms: must be at least 1".into());
        }
        // Each live agent holds its own uid from a block of 65536.
        if self.max_agents == 0 || self.max_agents > 60_000 {
            return bad(format!(
                "max_agents {}: must be between 1 and 60000",
                self.max_agents
            ));
        }
        if self.python.trim().is_empty() {
            return bad("python: must name an interpreter".into());
        }
        for (key, value) in [
            ("mailbox_messages", self.mailbox_messages),
            ("mailbox_bytes", self.mailbox_bytes),
            ("event_queue", self.event_queue),
            ("state_max_value", self.state_max_value),
            (
                "state_max_bytes",
                usize::try_from(self.state_max_bytes).unwrap_or(usize::MAX),
            ),
        ] {
            if value == 0 {
                return bad(format!("{key}: must be at least 1"));
            }
        }
        // An entry must fit in a file (a large one is a few KiB).
        if self.audit_max_file_bytes < 64 << 10 {
            return bad(format!(
                "audit_max_file_bytes {}: at least 65536",
                self.audit_max_file_bytes
            ));
        }
        if self.audit_keep_files < 2 {
            return bad(format!(
                "audit_keep_files {}: at least 2 (the live file and one rotated)",
                self.audit_keep_files
            ));
        }
        if self.http_max_response == 0 {
            return bad("http_max_response: must be at least 1".into());
        }
        if self.http_max_timeout.is_zero() {
            return bad("http_max_timeout_secs: must be at least 1".into());
        }
        if self.async_results == 0 {
            return bad("async_results: must be at least 1".into());
        }
        if self.kill_grace > Duration::from_secs(600) {
            return bad(format!(
                "kill_grace_ms {}: at most 600000",
                self.kill_grace.as_millis()
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return bad(format!("log_level {:?}: {e}", self.log_level));
        }
        Ok(())
    }

    /// The configuration as TOML, for `--print-config`.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(uid: u32) -> Host {
        Host {
            uid,
            runtime_dir: Some("/run/user/1000".into()),
            state_home: None,
            home: Some("/home/u".into()),
        }
    }

    fn flags(args: &[&str]) -> Flags {
        let mut v = vec!["clove-kernel"];
        v.extend_from_slice(args);
        Flags::try_parse_from(v).unwrap()
    }

    #[test]
    fn defaults_depend_on_the_user() {
        let f = flags(&["--config", "/dev/null"]);
        let root = load(&f, &host(0)).unwrap();
        assert_eq!(root.socket, PathBuf::from("/run/clove/clove.sock"));
        assert_eq!(root.state_dir, PathBuf::from("/var/lib/clove"));
        assert_eq!(root.compat_socket, Some(PathBuf::from("/tmp/clove.sock")));
        assert_eq!(root.max_frame, 1 << 20);
        let user = load(&f, &host(1000)).unwrap();
        assert_eq!(
            user.socket,
            PathBuf::from("/run/user/1000/clove/clove.sock")
        );
        assert_eq!(user.state_dir, PathBuf::from("/home/u/.local/state/clove"));
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "socket = \"/x/a.sock\"\nmax_frame = 10\ncompat_socket = false\n",
        )
        .unwrap();
        let f = flags(&["--config", file.to_str().unwrap(), "--max-frame", "20"]);
        let c = load(&f, &host(0)).unwrap();
        assert_eq!(c.socket, PathBuf::from("/x/a.sock"));
        assert_eq!(c.max_frame, 20);
        assert_eq!(c.compat_socket, None);
    }

    #[test]
    fn invalid_files_name_the_line_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "socket = \"/a\"\nmax_frmae = 3\n").unwrap();
        let f = flags(&["--config", file.to_str().unwrap()]);
        let e = load(&f, &host(0)).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("max_frmae"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        std::fs::write(&file, "max_frame = \"big\"\n").unwrap();
        let e = load(&f, &host(0)).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("invalid type"), "{e}");
    }

    #[test]
    fn audit_rotation_has_defaults_and_bounds() {
        let c = load(&flags(&["--config", "/dev/null"]), &host(0)).unwrap();
        assert_eq!((c.audit_max_file_bytes, c.audit_keep_files), (16 << 20, 8));
        let c = load(
            &flags(&["--config", "/dev/null", "--audit-keep-files", "3"]),
            &host(0),
        )
        .unwrap();
        assert_eq!(c.audit_keep_files, 3);
        for bad in [
            ["--audit-keep-files", "1"],
            ["--audit-max-file-bytes", "1000"],
        ] {
            let mut args = vec!["--config", "/dev/null"];
            args.extend_from_slice(&bad);
            let e = load(&flags(&args), &host(0)).unwrap_err().to_string();
            assert!(e.starts_with(&bad[0][2..].replace('-', "_")), "{e}");
        }
    }

    #[test]
    fn limits_are_validated() {
        let e = load(
            &flags(&["--config", "/dev/null", "--max-frame", "0"]),
            &host(0),
        );
        assert!(e.unwrap_err().to_string().starts_with("max_frame 0"));
        let long = format!("/{}", "a".repeat(200));
        let e = load(
            &flags(&["--config", "/dev/null", "--socket", &long]),
            &host(0),
        );
        assert!(e.unwrap_err().to_string().contains("Unix socket path"));
    }

    #[test]
    fn metrics_addr_is_off_by_default_and_must_be_ip_and_port() {
        let c = load(&flags(&["--config", "/dev/null"]), &host(0)).unwrap();
        assert_eq!(c.metrics_addr, None);
        assert!(!c.to_toml().contains("metrics_addr"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "metrics_addr = \"127.0.0.1:9464\"\n").unwrap();
        let c = load(&flags(&["--config", file.to_str().unwrap()]), &host(0)).unwrap();
        assert_eq!(c.metrics_addr, Some("127.0.0.1:9464".parse().unwrap()));
        assert!(c.to_toml().contains("metrics_addr = \"127.0.0.1:9464\""));
        let c = load(
            &flags(&[
                "--config",
                file.to_str().unwrap(),
                "--metrics-addr",
                "[::1]:0",
            ]),
            &host(0),
        )
        .unwrap();
        assert_eq!(c.metrics_addr, Some("[::1]:0".parse().unwrap()));
        for bad in ["localhost:9464", "127.0.0.1", ":9464", "127.0.0.1:99999"] {
            let e = load(
                &flags(&["--config", "/dev/null", "--metrics-addr", bad]),
                &host(0),
            )
            .unwrap_err()
            .to_string();
            assert!(
                e.starts_with("metrics_addr") && e.contains("IP:PORT"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn http_and_async_keys_from_file_env_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "http_allow_private = [\"127.0.0.1\", \"10.1.2.3/16\"]\n\
             http_max_response = 5\nasync_results = 3\n\
             [http_resolve]\n\"Name.Test.\" = \"10.0.0.1\"\n\"two.test\" = [\"::1\", \"10.0.0.2\"]\n",
        )
        .unwrap();
        let f = flags(&["--config", file.to_str().unwrap()]);
        let c = load(&f, &host(0)).unwrap();
        let cidrs: Vec<String> = c.http_allow_private.iter().map(|c| c.to_string()).collect();
        assert_eq!(cidrs, ["127.0.0.1/32", "10.1.0.0/16"]);
        assert_eq!(
            c.http_resolve["name.test"],
            vec!["10.0.0.1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(c.http_resolve["two.test"].len(), 2);
        assert_eq!((c.http_max_response, c.async_results), (5, 3));
        assert_eq!(c.http_max_timeout, Duration::from_secs(300));
        assert!(c
            .to_toml()
            .contains("http_allow_private = [\"127.0.0.1/32\", \"10.1.0.0/16\"]"));

        let f = flags(&[
            "--config",
            file.to_str().unwrap(),
            "--http-resolve",
            "a.test=10.0.0.1,a.test=10.0.0.3",
            "--http-allow-private",
            "::1/128",
        ]);
        let c = load(&f, &host(0)).unwrap();
        assert_eq!(c.http_resolve.len(), 1);
        assert_eq!(c.http_resolve["a.test"].len(), 2);
        assert_eq!(c.http_allow_private.len(), 1);

        for (args, says) in [
            (
                &["--http-allow-private", "10.0.0.0/40"][..],
                "http_allow_private",
            ),
            (&["--http-resolve", "a.test"], "NAME=IP"),
            (&["--http-resolve", "a.test=nope"], "not an IP address"),
            (&["--async-results", "0"], "async_results"),
            (&["--http-max-response", "0"], "http_max_response"),
        ] {
            let mut all = vec!["--config", "/dev/null"];
            all.extend_from_slice(args);
            let e = load(&flags(&all), &host(0)).unwrap_err().to_string();
            assert!(e.contains(says), "{args:?}: {e}");
        }
    }
}
