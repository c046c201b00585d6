//! `clove-kernel`: flags → config → state dir lock → sockets → server.
//!
//! Exit codes: 0 after a clean shutdown; 2 for an invalid configuration or flags (one error
//! line on stderr); 1 when the kernel cannot start (state dir in use, socket in use, ...) or
//! fails while running.

mod agents;
mod asyncs;
mod audit;
mod config;
mod events;
mod host;
mod ids;
mod ipc;
mod kernel;
mod llm;
mod metrics;
mod notify;
mod perms;
mod record;
mod sandbox;
mod server;
mod state;
mod state_dir;
mod supervisor;
mod sync;
mod syscalls;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use config::{Config, Flags, LogFormat};

fn main() -> ExitCode {
    // Init mode: PID 1 of an agent's sandbox, exec'd by the launcher (sandbox::launch).
    // Checked before flag parsing so it never shows in --help.
    match std::env::args_os().nth(1) {
        Some(a) if a == sandbox::init::ARG => sandbox::init::main(),
        // The launcher's fork server, whose children run init without an exec.
        Some(a) if a == sandbox::forkserver::ARG => sandbox::forkserver::main(),
        _ => {}
    }
    let flags = match Flags::try_parse() {
        Ok(flags) => flags,
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => return config_error(&first_line(&e.render().to_string())),
    };
    let config = match config::load(&flags, &config::Host::current()) {
        Ok(c) => c,
        Err(e) => return config_error(&e.to_string()),
    };
    if flags.print_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    init_logging(&config);
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("clove-kernel: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn config_error(msg: &str) -> ExitCode {
    eprintln!("clove-kernel: invalid config: {msg}");
    ExitCode::from(2)
}

fn first_line(text: &str) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or(text);
    line.trim_start_matches("error: ").trim().to_owned()
}

fn init_logging(config: &Config) {
    // Validated in config::load, so the filter parses.
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    // First, while no thread exists: it takes NOTIFY_SOCKET out of the environment.
    let notifier = notify::Notifier::from_env();
    // Files the kernel creates are private unless it widens them (the socket becomes 0660).
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    raise_fd_limit();
    // Rust ignores SIGPIPE before main, so a client that vanishes mid-reply is a write error
    // on that connection, never the end of the kernel (the original died of it).

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("clove-worker")
        .build()
        .context("start the async runtime")?;
    // Catch SIGTERM/SIGINT before anything is created that a shutdown must undo (sockets,
    // cgroups): a signal during start-up is then handled by the normal shutdown path, which
    // runs as soon as serving begins, instead of killing the kernel half set up.
    let signals = {
        let _enter = runtime.enter();
        Signals::install().context("install the SIGTERM/SIGINT handlers")?
    };

    let state = state_dir::StateDir::lock(&config.state_dir)?;
    // Bound now, so that a taken port fails the start (before the sockets exist); served once
    // the kernel is ready.
    let metrics = config
        .metrics_addr
        .map(|addr| metrics::prometheus::Endpoint::bind(addr, state.path()))
        .transpose()?;
    let group = server::socket::clove_group();
    let mut sockets = vec![server::socket::bind(&config.socket, group)?];
    if let Some(compat) = &config.compat_socket {
        sockets.push(server::socket::bind(compat, group)?);
    }

    let host = {
        let _enter = runtime.enter();
        agents::Host::setup(&config, state.path())?
    };
    let kernel = {
        // Inside the runtime: what the previous run left expires on timers, not threads.
        let _enter = runtime.enter();
        Arc::new(kernel::Kernel::new(config, host, state.path())?)
    };
    let state_path = state.path().display().to_string();
    runtime.block_on(async move {
        let shutdown = kernel.stopping.clone();
        tokio::spawn(signals.wait(shutdown.clone()));
        notifier.watch(shutdown.clone());
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            pid = std::process::id(),
            socket = %kernel.config.socket.display(),
            compat_socket = %kernel.config.compat_socket.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "off".into()),
            state_dir = %state_path,
            "clove-kernel ready; try: clove --socket {} status",
            kernel.config.socket.display()
        );
        tracing::info!("LLM: {}", kernel.llm.describe());
        let metrics = metrics.map(|endpoint| {
            tracing::info!("metrics: http://{}/metrics", endpoint.addr());
            tokio::spawn(endpoint.serve(Arc::clone(&kernel)))
        });
        if kernel.llm.fell_back_to_simulated() {
            tracing::warn!(
                "LLM: no provider named and no key found: THINK answers come from the \
                 simulated provider (no model is asked; every reply says \"provider\": \
                 \"simulated\"); for a real model set GEMINI_API_KEY, GOOGLE_API_KEY, \
                 ANTHROPIC_API_KEY or OPENAI_API_KEY, or use --llm-provider"
            );
        }
        kernel.start_background().await;
        let listeners = server::install(&kernel, shutdown);
        // The agents an earlier kernel saved come back before the main sockets accept, so
        // no SPAWN takes one's name first. (Supervisor groups are restored before them.)
        kernel.groups.restore();
        agents::restore::restore(&kernel).await;
        // The sockets listen since bind: a client told "ready" is queued, then accepted.
        notifier.ready(&format!("serving on {}", kernel.config.socket.display()));
        let served = server::serve(listeners, sockets).await;
        if let Some(metrics) = metrics {
            // It stops with `kernel.stopping`, as the sockets did.
            let _ = metrics.await;
        }
        kernel.stop_agents().await;
        // Last: every STORE that replied is already durable; this stops the writer cleanly.
        kernel.state.shutdown().await;
        // The exits of the agents just stopped are in the audit log before it closes.
        kernel.audit.shutdown().await;
        served
    })?;
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    tracing::info!("clove-kernel stopped");
    drop(state);
    Ok(())
}

/// The shutdown signals, registered early.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Registers the handlers (inside a runtime context).
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the first one (also one that arrived before this was called) and cancels
    /// `shutdown`.
    async fn wait(mut self, shutdown: CancellationToken) {
        let name = tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        };
        tracing::info!("{name} received: shutting down");
        shutdown.cancel();
    }
}

/// Raises the soft open-files limit to the hard limit: every client connection is a file
/// descriptor, and the usual soft limit (1024) is below the default connection limit.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!("raise RLIMIT_NOFILE from {soft} to {hard}: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("read RLIMIT_NOFILE: {e}"),
    }
}
