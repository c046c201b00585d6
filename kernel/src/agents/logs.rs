//! Agents' output: stdout and stderr go into one pipe per agent, which the kernel drains into
//! `<agent dir>/output.log`, rotated to `output.log.1` at a size cap, so a chatty agent can
//! never fill the disk. Because the kernel does the writing, it knows every byte's position:
//! LOGS reads by a logical offset (bytes written since the agent started) that stays valid
//! across rotations, and a follower waits on a watch channel instead of polling the file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::watch;

/// The log's size cap before rotation (one rotated file is kept, so at most twice this).
pub const LOG_MAX_BYTES: u64 = 8 << 20;
/// The most text one LOGS reply carries.
pub const READ_MAX_BYTES: u64 = 256 << 10;

#[derive(Debug, Default, Clone, Copy)]
struct Positions {
    /// Logical offset of the first byte of `output.log.1` (equal to `current` when none).
    rotated: u64,
    /// Logical offset of the first byte of `output.log`.
    current: u64,
    /// Bytes written in all.
    written: u64,
}

/// One agent's log.
#[derive(Debug)]
pub struct AgentLog {
    dir: PathBuf,
    max: u64,
    pos: Mutex<Positions>,
    written: watch::Sender<u64>,
    /// Set when the pipe has closed (every writer has exited).
    closed: watch::Sender<bool>,
    /// Pipes being drained: one per run of the agent, two at most while a restarted run
    /// starts and the last one's stragglers still write.
    pumps: std::sync::atomic::AtomicUsize,
}

/// Text read from a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The text (invalid UTF-8 replaced).
    pub text: String,
    /// Where the next read continues.
    pub next: u64,
    /// The oldest offset still on disk.
    pub first: u64,
}

impl AgentLog {
    /// Creates the empty log file in `dir` ahead of [`AgentLog::create`], as it would.
    pub fn prepare(dir: &Path) -> io::Result<()> {
        open_append(&dir.join("output.log")).map(drop)
    }

    /// The log in `dir`, capped at `max` bytes per file: created empty, or continued when
    /// `dir` has one (an agent restored by a new kernel), its offsets then counting from the
    /// oldest byte on disk.
    pub fn create(dir: &Path, max: u64) -> io::Result<Arc<AgentLog>> {
        let current = open_append(&dir.join("output.log"))?.metadata()?.len();
        let rotated = match fs::metadata(dir.join("output.log.1")) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        Ok(Arc::new(AgentLog {
            dir: dir.to_path_buf(),
            max: max.max(4096),
            pos: Mutex::new(Positions {
                rotated: 0,
                current: rotated,
                written: rotated + current,
            }),
            written: watch::channel(0).0,
            closed: watch::channel(false).0,
            pumps: std::sync::atomic::AtomicUsize::new(0),
        }))
    }

    fn current_path(&self) -> PathBuf {
        self.dir.join("output.log")
    }

    fn rotated_path(&self) -> PathBuf {
        self.dir.join("output.log.1")
    }

    fn positions(&self) -> Positions {
        *crate::sync::lock(&self.pos)
    }

    /// Appends a line of the kernel's own (a restart marker) between two runs' output.
    pub fn note(&self, line: &str) -> io::Result<()> {
        let mut file = open_append(&self.current_path())?;
        self.append(&mut file, format!("{line}\n").as_bytes())
    }

    /// Drains `pipe` into the log until every writer has closed it. The log counts as closed
    /// once every pipe given to it has.
    pub fn pump(self: &Arc<Self>, pipe: OwnedFd) {
        use std::sync::atomic::Ordering;
        self.pumps.fetch_add(1, Ordering::SeqCst);
        self.closed.send_replace(false);
        let log = Arc::clone(self);
        tokio::spawn(async move {
            log.drain(pipe).await;
            if log.pumps.fetch_sub(1, Ordering::SeqCst) == 1 {
                log.closed.send_replace(true);
            }
        });
    }

    /// Copies `pipe` into the log until every writer has closed it.
    async fn drain(&self, pipe: OwnedFd) {
        let log = self;
        let mut rx = match tokio::net::unix::pipe::Receiver::from_owned_fd(pipe) {
            Ok(rx) => rx,
            Err(e) => {
                tracing::error!("agent log {}: {e}", log.dir.display());
                return;
            }
        };
        let mut file = match open_append(&log.current_path()) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!("open {}: {e}", log.current_path().display());
                return;
            }
        };
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match rx.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!("agent log {}: read: {e}", log.dir.display());
                    break;
                }
            };
            if let Err(e) = log.append(&mut file, &buf[..n]) {
                // Keep draining so the agent never blocks on a full pipe.
                tracing::warn!("agent log {}: {e}", log.dir.display());
            }
        }
    }

    /// Appends `bytes`, rotating whenever the current file would pass the cap. A chunk is
    /// cut at its last newline that still fits, so lines stay whole within a file.
    fn append(&self, file: &mut File, mut bytes: &[u8]) -> io::Result<()> {
        let mut pos = crate::sync::lock(&self.pos);
        while !bytes.is_empty() {
            let mut room = self.max.saturating_sub(pos.written - pos.current);
            if room == 0 {
                self.rotate(file, &mut pos)?;
                room = self.max;
            }
            let mut take = bytes.len().min(room as usize);
            if take < bytes.len() {
                if let Some(nl) = bytes[..take].iter().rposition(|b| *b == b'\n') {
                    take = nl + 1;
                }
            }
            file.write_all(&bytes[..take])?;
            pos.written += take as u64;
            bytes = &bytes[take..];
            if !bytes.is_empty() {
                // The rest goes into a fresh file.
                self.rotate(file, &mut pos)?;
            }
        }
        let written = pos.written;
        drop(pos);
        self.written.send_replace(written);
        Ok(())
    }

    /// Moves the current file to `output.log.1` (dropping the older one) and starts anew.
    fn rotate(&self, file: &mut File, pos: &mut Positions) -> io::Result<()> {
        fs::rename(self.current_path(), self.rotated_path())?;
        *file = open_append(&self.current_path())?;
        pos.rotated = pos.current;
        pos.current = pos.written;
        Ok(())
    }

    /// Whether every writer has closed the pipe.
    pub fn closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// The last `lines` lines.
    pub fn tail(&self, lines: u32) -> io::Result<Chunk> {
        let pos = self.positions();
        let from = pos.written.saturating_sub(READ_MAX_BYTES).max(pos.rotated);
        let chunk = self.read_from(from)?;
        let text = last_lines(&chunk.text, lines as usize);
        Ok(Chunk {
            text: text.to_owned(),
            next: chunk.next,
            first: chunk.first,
        })
    }

    /// Up to [`READ_MAX_BYTES`] from logical offset `offset` (clamped to what is on disk).
    pub fn read_from(&self, offset: u64) -> io::Result<Chunk> {
        let pos = self.positions();
        let start = offset.clamp(pos.rotated, pos.written);
        let end = pos.written.min(start + READ_MAX_BYTES);
        let mut out = Vec::with_capacity((end - start) as usize);
        if start < pos.current {
            // Part of it is in the rotated file.
            let upto = end.min(pos.current);
            read_range(
                &self.rotated_path(),
                start - pos.rotated,
                upto - start,
                &mut out,
            )?;
        }
        if end > pos.current {
            let s = start.max(pos.current);
            read_range(&self.current_path(), s - pos.current, end - s, &mut out)?;
        }
        Ok(Chunk {
            text: String::from_utf8_lossy(&out).into_owned(),
            next: start + out.len() as u64,
            first: pos.rotated,
        })
    }

    /// Waits up to `limit` until the log grows past `offset` or closes.
    pub async fn wait_past(&self, offset: u64, limit: Duration) {
        let mut written = self.written.subscribe();
        let mut closed = self.closed.subscribe();
        let _ = tokio::time::timeout(limit, async {
            loop {
                if *written.borrow_and_update() > offset || *closed.borrow_and_update() {
                    return;
                }
                tokio::select! {
                    r = written.changed() => if r.is_err() { return },
                    r = closed.changed() => if r.is_err() { return },
                }
            }
        })
        .await;
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

fn read_range(path: &Path, at: u64, len: u64, out: &mut Vec<u8>) -> io::Result<()> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(at))?;
    f.take(len).read_to_end(out)?;
    Ok(())
}

/// The last `n` lines of `text` (a final line without a newline counts).
fn last_lines(text: &str, n: usize) -> &str {
    if n == 0 {
        return "";
    }
    let body = text.strip_suffix('\n').unwrap_or(text);
    match body.rmatch_indices('\n').nth(n - 1) {
        Some((i, _)) => &text[i + 1..],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_counts_a_trailing_partial_line() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(last_lines("a\nb\nc", 2), "b\nc");
        assert_eq!(last_lines("a\n", 5), "a\n");
        assert_eq!(last_lines("a\nb\n", 0), "");
    }

    #[tokio::test]
    async fn offsets_survive_rotation_and_followers_wake() {
        let dir = tempfile::tempdir().unwrap();
        let log = AgentLog::create(dir.path(), 4096).unwrap();
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        log.pump(r);
        let mut w = File::from(w);
        let line = "x".repeat(99) + "\n";
        for _ in 0..100 {
            w.write_all(line.as_bytes()).unwrap();
        }
        drop(w);
        // Wait for the pump to drain and see EOF.
        for _ in 0..200 {
            if log.closed() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(log.closed(), "{:?}", log.positions());
        let pos = log.positions();
        assert_eq!(pos.written, 10_000);
        // Rotated at 4096: the oldest bytes are gone, the offsets still add up.
        assert!(pos.rotated > 0 && pos.current > pos.rotated, "{pos:?}");
        let all = log.read_from(0).unwrap();
        assert_eq!(all.first, pos.rotated);
        assert_eq!(all.next, 10_000);
        assert_eq!(all.text.len() as u64, 10_000 - pos.rotated);
        assert!(all.text.ends_with(&line));
        // A read spanning both files is seamless: every line is whole.
        assert!(all.text.lines().all(|l| l.len() == 99), "torn line");
        assert_eq!(log.tail(3).unwrap().text, line.repeat(3));
        // Reading at the end waits, and returns once closed.
        log.wait_past(10_000, Duration::from_secs(5)).await;
        assert_eq!(log.read_from(10_000).unwrap().text, "");
    }

    async fn until_closed(log: &AgentLog) {
        for _ in 0..400 {
            if log.closed() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_log_left_by_an_earlier_kernel_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("output.log.1"), "old 1\n").unwrap();
        fs::write(dir.path().join("output.log"), "old 2\n").unwrap();
        let log = AgentLog::create(dir.path(), 4096).unwrap();
        log.note("--- marker ---").unwrap();
        let all = log.read_from(0).unwrap();
        assert_eq!(all.text, "old 1\nold 2\n--- marker ---\n");
        assert_eq!((all.first, all.next), (0, 27));
        assert_eq!(log.tail(2).unwrap().text, "old 2\n--- marker ---\n");
        assert_eq!(log.read_from(12).unwrap().text, "--- marker ---\n");
    }

    #[tokio::test]
    async fn a_restart_continues_the_log_after_a_marker() {
        let dir = tempfile::tempdir().unwrap();
        let log = AgentLog::create(dir.path(), 1 << 20).unwrap();
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        log.pump(r);
        File::from(w).write_all(b"first run\n").unwrap();
        until_closed(&log).await;
        assert!(log.closed());
        log.note("--- clove: restart 1 after exit code 1 ---")
            .unwrap();
        // The second run's pipe opens the log again: followers keep following.
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        log.pump(r);
        assert!(!log.closed());
        let mut w = File::from(w);
        w.write_all(b"second run\n").unwrap();
        drop(w);
        until_closed(&log).await;
        assert!(log.closed());
        assert_eq!(
            log.read_from(0).unwrap().text,
            "first run\n--- clove: restart 1 after exit code 1 ---\nsecond run\n"
        );
    }
}
