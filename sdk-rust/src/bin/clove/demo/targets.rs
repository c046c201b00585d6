//! The host side of the demos: what the attacks aim at, created fresh for each demo and removed
//! afterwards (temporary directories with exact modes, a canary file, loopback listeners that
//! count what reaches them).

use std::fs;
use std::io::{self, Read};
use std::net::{TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::judge::NetSeen;

/// A temporary directory with a given mode, removed on drop.
pub struct TempDir {
    /// The directory.
    pub path: PathBuf,
}

impl TempDir {
    /// A fresh directory `<temp dir>/<prefix>-<pid>-<n>` with `mode` (whatever the umask).
    pub fn new(prefix: &str, mode: u32) -> Result<TempDir, String> {
        let base = std::env::temp_dir();
        for attempt in 0..100u32 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let path = base.join(format!(
                "{prefix}-{}-{nanos:08x}{attempt}",
                std::process::id()
            ));
            match fs::create_dir(&path) {
                Ok(()) => {
                    let dir = TempDir { path };
                    // Explicitly, whatever the umask.
                    set_mode(&dir.path, mode)?;
                    return Ok(dir);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(format!("create {}: {e}", path.display())),
            }
        }
        Err(format!(
            "create a directory {prefix}-* in {}: every name taken",
            base.display()
        ))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

pub fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {:o} {}: {e}", mode, path.display()))
}

/// fs-escape's targets: a world-readable canary in a fresh 0755 dir, a 1777 dir.
pub struct FsCanary {
    _canary_dir: TempDir,
    /// The canary file.
    pub canary: PathBuf,
    /// Its contents.
    pub secret: String,
    /// The world-writable directory.
    pub writable: TempDir,
}

impl FsCanary {
    /// Creates both, with fresh names and contents.
    pub fn create() -> Result<FsCanary, String> {
        let dir = TempDir::new("clove-canary", 0o755)?;
        let canary = dir.path.join("canary.txt");
        let secret = format!("clove canary {}", nonce());
        fs::write(&canary, &secret).map_err(|e| format!("write {}: {e}", canary.display()))?;
        set_mode(&canary, 0o644)?;
        let writable = TempDir::new("clove-writable", 0o1777)?;
        Ok(FsCanary {
            _canary_dir: dir,
            canary,
            secret,
            writable,
        })
    }

    /// The names in the writable dir now.
    pub fn written(&self) -> Vec<String> {
        fs::read_dir(&self.writable.path)
            .map(|d| {
                d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                    .collect()
            })
            .unwrap_or_else(|e| vec![format!("(cannot list: {e})")])
    }
}

/// network-probe's targets: a TCP and a UDP listener on 127.0.0.1, counting what arrives.
pub struct NetCanary {
    /// The TCP listener's port.
    pub tcp_port: u16,
    /// The UDP socket's port.
    pub udp_port: u16,
    /// What the probe sends, to recognise its traffic.
    pub nonce: String,
    stop: Arc<AtomicBool>,
    tcp_seen: Arc<AtomicUsize>,
    udp_seen: Arc<AtomicUsize>,
    nonce_seen: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl NetCanary {
    /// Binds both on 127.0.0.1 (ports chosen by the system) and starts counting.
    pub fn start() -> Result<NetCanary, String> {
        let tcp = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| format!("tcp listener on 127.0.0.1: {e}"))?;
        let udp =
            UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("udp socket on 127.0.0.1: {e}"))?;
        let tcp_port = tcp.local_addr().map_err(|e| e.to_string())?.port();
        let udp_port = udp.local_addr().map_err(|e| e.to_string())?.port();
        tcp.set_nonblocking(true).map_err(|e| e.to_string())?;
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .map_err(|e| e.to_string())?;
        let nonce = nonce();
        let stop = Arc::new(AtomicBool::new(false));
        let tcp_seen = Arc::new(AtomicUsize::new(0));
        let udp_seen = Arc::new(AtomicUsize::new(0));
        let nonce_seen = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        // Anything that arrives counts; the nonce only says whether it was the attacker.
        {
            let (stop, seen, marked) = (
                Arc::clone(&stop),
                Arc::clone(&tcp_seen),
                Arc::clone(&nonce_seen),
            );
            let nonce = nonce.clone().into_bytes();
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match tcp.accept() {
                        Ok((mut s, _)) => {
                            seen.fetch_add(1, Ordering::SeqCst);
                            let _ = s.set_nonblocking(false);
                            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                            let mut buf = [0u8; 64];
                            let n = s.read(&mut buf).unwrap_or(0);
                            if buf[..n] == nonce[..] {
                                marked.store(true, Ordering::SeqCst);
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            }));
        }
        {
            let (stop, seen, marked) = (
                Arc::clone(&stop),
                Arc::clone(&udp_seen),
                Arc::clone(&nonce_seen),
            );
            let nonce = nonce.clone().into_bytes();
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 512];
                while !stop.load(Ordering::SeqCst) {
                    if let Ok((n, _)) = udp.recv_from(&mut buf) {
                        seen.fetch_add(1, Ordering::SeqCst);
                        if buf[..n] == nonce[..] {
                            marked.store(true, Ordering::SeqCst);
                        }
                    }
                }
            }));
        }
        Ok(NetCanary {
            tcp_port,
            udp_port,
            nonce,
            stop,
            tcp_seen,
            udp_seen,
            nonce_seen,
            threads,
        })
    }

    /// Stops listening (after a moment for late arrivals) and says what arrived.
    pub fn finish(mut self) -> NetSeen {
        std::thread::sleep(Duration::from_millis(300));
        self.stop_threads();
        NetSeen {
            tcp_port: self.tcp_port,
            udp_port: self.udp_port,
            tcp_connections: self.tcp_seen.load(Ordering::SeqCst),
            udp_datagrams: self.udp_seen.load(Ordering::SeqCst),
            nonce_seen: self.nonce_seen.load(Ordering::SeqCst),
        }
    }

    fn stop_threads(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for NetCanary {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

/// A value no one can guess in advance (for the canary's contents and the probe's payload).
fn nonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{:016x}", h.finish())
}

/// A demo's agent script on disk, readable by the agents' uids: the copy in `--demos-dir`,
/// or the built-in copy written to a fresh directory (kept until this is dropped).
pub struct Script {
    /// The script's absolute path.
    pub path: String,
    /// Holds the directory the built-in copy was written to.
    _temp: Option<TempDir>,
}

impl Script {
    /// `from/file` when a directory is given, else `source` written as `file` into a new
    /// directory named after `prefix`.
    pub fn prepare(
        from: Option<&Path>,
        file: &str,
        source: &str,
        prefix: &str,
    ) -> Result<Script, String> {
        if let Some(dir) = from {
            let path = dir.join(file);
            let path = path
                .canonicalize()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            return Ok(Script {
                path: path.to_string_lossy().into_owned(),
                _temp: None,
            });
        }
        // Agents run as their own uids: the directory and the script must be readable by
        // everyone (they hold nothing secret).
        let temp = TempDir::new(prefix, 0o755)?;
        let path = temp.path.join(file);
        fs::write(&path, source).map_err(|e| format!("write {}: {e}", path.display()))?;
        set_mode(&path, 0o644)?;
        Ok(Script {
            path: path.to_string_lossy().into_owned(),
            _temp: Some(temp),
        })
    }
}
