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
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::kernel::{Caller, Kernel};
use socket::BoundSocket;

/// The longest a shutdown waits for connections to finish.
pub const SHUTDOWN_LIMIT: Duration = Duration::from_secs(10);

/// Serves `sockets` until `shutdown` is cancelled, then drains and returns.
pub async fn serve(
    kernel: Arc<Kernel>,
    sockets: Vec<BoundSocket>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let slots = Arc::new(Semaphore::new(kernel.config.max_connections));
    let full_warned = Arc::new(AtomicBool::new(false));
    let conns = TaskTracker::new();
    let accepts = TaskTracker::new();
    let mut paths = Vec::new();
    for bound in sockets {
        let listener = UnixListener::from_std(bound.listener.try_clone()?)?;
        accepts.spawn(accept_loop(
            listener,
            Arc::clone(&kernel),
            Arc::clone(&slots),
            Arc::clone(&full_warned),
            conns.clone(),
            shutdown.clone(),
        ));
        paths.push(bound);
    }
    accepts.close();

    shutdown.cancelled().await;
    accepts.wait().await;
    for bound in &paths {
        bound.remove();
    }
    drop(paths);
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

async fn accept_loop(
    listener: UnixListener,
    kernel: Arc<Kernel>,
    slots: Arc<Semaphore>,
    full_warned: Arc<AtomicBool>,
    conns: TaskTracker,
    shutdown: CancellationToken,
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
        let caller = Caller {
            id: kernel.ids.allocate(),
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
