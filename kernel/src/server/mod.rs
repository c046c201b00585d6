//! The socket server: accept loops on the main and compat sockets, one task per connection,
//! a bound on open connections, and an orderly shutdown.
//!
//! Shutdown (SIGTERM/SIGINT): stop accepting, remove the socket files (new clients fail fast
//! instead of queueing on a dying kernel), let every connection answer what it has already
//! received, then exit. A connection that does not finish within [`SHUTDOWN_LIMIT`] is dropped,
//! so shutdown never hangs.

mod conn;
pub mod socket;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::kernel::{Caller, Kernel};
use socket::BoundSocket;

/// The longest a shutdown waits for connections to finish.
pub const SHUTDOWN_LIMIT: Duration = Duration::from_secs(10);

/// Who a listener's connections are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// The main and compat sockets: each connection gets a fresh id and is known by its
    /// peer credentials.
    Peer,
    /// An agent's own socket: every connection there is that agent, whichever process of
    /// its tree connects, and carries its id.
    Agent(u32),
}

/// What every accept loop shares: the connection slots, the connection tasks and the
/// shutdown signal. Listeners opened later (an agent's socket) join through it.
#[derive(Debug, Clone)]
pub struct Listeners {
    kernel: Weak<Kernel>,
    slots: Arc<Semaphore>,
    full_warned: Arc<AtomicBool>,
    conns: TaskTracker,
    accepts: TaskTracker,
    shutdown: CancellationToken,
}

impl Listeners {
    /// Client connections being served now, on every socket (agents' own included).
    pub fn open_connections(&self) -> usize {
        self.conns.len()
    }

    /// Serves `listener` until `stop` or the kernel's shutdown.
    pub fn listen(&self, listener: UnixListener, identity: Identity, stop: CancellationToken) {
        let Some(kernel) = self.kernel.upgrade() else {
            return;
        };
        self.accepts.spawn(accept_loop(
            listener,
            identity,
            kernel,
            Arc::clone(&self.slots),
            Arc::clone(&self.full_warned),
            self.conns.clone(),
            self.shutdown.clone(),
            stop,
        ));
    }
}

/// Installs the accept machinery in `kernel.listeners`: from now on agents' sockets are
/// served (those of restored agents, before the main sockets accept anything). Connections
/// end when `shutdown` is cancelled.
pub fn install(kernel: &Arc<Kernel>, shutdown: CancellationToken) -> Listeners {
    let listeners = Listeners {
        kernel: Arc::downgrade(kernel),
        slots: Arc::new(Semaphore::new(kernel.config.max_connections)),
        full_warned: Arc::new(AtomicBool::new(false)),
        conns: TaskTracker::new(),
        accepts: TaskTracker::new(),
        shutdown,
    };
    let _ = kernel.listeners.set(listeners.clone());
    listeners
}

/// Serves `sockets` (and every agent socket of `listeners`) until the shutdown, then drains
/// and returns.
pub async fn serve(listeners: Listeners, sockets: Vec<BoundSocket>) -> anyhow::Result<()> {
    let shutdown = listeners.shutdown.clone();
    let mut paths = Vec::new();
    for bound in sockets {
        let listener = UnixListener::from_std(bound.listener.try_clone()?)?;
        listeners.listen(listener, Identity::Peer, CancellationToken::new());
        paths.push(bound);
    }

    shutdown.cancelled().await;
    listeners.accepts.close();
    listeners.accepts.wait().await;
    for bound in &paths {
        bound.remove();
    }
    drop(paths);
    let conns = listeners.conns;
    conns.close();
    let open = conns.len();
    if open > 0 {
        tracing::info!("waiting for {open} connection(s) to finish");
    }
    if tokio::time::timeout(SHUTDOWN_LIMIT, conns.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "{} connection(s) still busy after {:?}; closing them",
            conns.len(),
            SHUTDOWN_LIMIT
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)] // one call site, each argument a different shared piece
async fn accept_loop(
    listener: UnixListener,
    identity: Identity,
    kernel: Arc<Kernel>,
    slots: Arc<Semaphore>,
    full_warned: Arc<AtomicBool>,
    conns: TaskTracker,
    shutdown: CancellationToken,
    stop: CancellationToken,
) {
    loop {
        // Take a slot before accepting: beyond the limit, clients wait in the listen backlog
        // instead of being accepted and starved.
        let permit = match Arc::clone(&slots).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if !full_warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        max_connections = kernel.config.max_connections,
                        "connection limit reached; new clients wait until one closes"
                    );
                }
                tokio::select! {
                    p = Arc::clone(&slots).acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return,
                    },
                    () = shutdown.cancelled() => return,
                    () = stop.cancelled() => return,
                }
            }
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    // EMFILE and friends: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
            () = stop.cancelled() => return,
        };
        if slots.available_permits() > 0 {
            full_warned.store(false, Ordering::Relaxed);
        }
        let cred = match stream.peer_cred() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("SO_PEERCRED: {e}; dropping connection");
                continue;
            }
        };
        // A peer inside an agent's cgroup is that agent, whichever socket it used.
        let identity = match (identity, cred.pid()) {
            (Identity::Peer, Some(pid)) => kernel
                .agents
                .agent_of_pid(pid)
                .map_or(Identity::Peer, Identity::Agent),
            (identity, _) => identity,
        };
        let caller = Caller {
            id: match identity {
                Identity::Peer => kernel.ids.allocate(),
                Identity::Agent(id) => id,
            },
            agent: matches!(identity, Identity::Agent(_)),
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
        };
        tracing::debug!(
            conn = caller.id,
            uid = caller.uid,
            gid = caller.gid,
            pid = caller.pid,
            "connection opened"
        );
        let (kernel, shutdown) = (Arc::clone(&kernel), shutdown.clone());
        conns.spawn(async move {
            conn::serve(stream, kernel, caller, shutdown).await;
            drop(permit);
        });
    }
}
