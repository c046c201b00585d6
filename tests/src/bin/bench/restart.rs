//! `restart`: how fast the kernel brings a crashed agent back (the supervision issue's
//! benchmark), against a fresh SPAWN of the same program in the same run.
//!
//! The agent is a shell script that exits 1 at once, spawned sandboxed with `on-failure`,
//! `restart_backoff_ms: 0` and a budget it cannot spend, so the kernel restarts it in a loop.
//! A second connection subscribes to AGENT_EXITED and AGENT_SPAWNED and polls with a wait; a
//! sample is the time from reading the exit event (`restarting: true`) to reading the next
//! AGENT_SPAWNED of the same agent, which the kernel publishes once the new process has
//! exec'd. Both events reach the bench the same way, so their delivery cost cancels out; a
//! pair that arrives in one poll cannot be timed and is counted, not guessed. The baseline is
//! SPAWN request → reply (the agent exec'd) of the same script as a new agent.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clove_abi::msg::{AgentRef, RestartPolicy, SpawnRequest};
use clove_sdk::Client;
use clove_tests::Kernel;

use super::progress;
use super::stats::{summarize, Summary};

/// The crashing agent: exits 1 as soon as it runs.
const CRASH_SCRIPT: &str = "#!/bin/sh\nexit 1\n";

/// What `restart` measured.
pub struct RestartResult {
    /// Restarts timed.
    pub runs: usize,
    /// Exit event read → AGENT_SPAWNED of the restarted process read.
    pub restart: Summary,
    /// SPAWN request → reply of a new agent running the same script.
    pub spawn: Summary,
    /// Exit/spawn pairs that arrived in one poll (not timed).
    pub untimed: usize,
}

/// The script in a temporary directory everyone can read and run, removed on drop.
struct CrashScript {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl CrashScript {
    fn create() -> Result<CrashScript> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("clove-bench-restart-")
            .tempdir()
            .context("create a temporary directory for the crash script")?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let path = dir.path().join("crash.sh");
        std::fs::write(&path, CRASH_SCRIPT).with_context(|| format!("write {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        Ok(CrashScript { _dir: dir, path })
    }
}

fn client(kernel: &Kernel) -> Result<Client> {
    let mut c = Client::connect(Some(&kernel.socket))
        .with_context(|| format!("connect {}", kernel.socket.display()))?;
    c.set_timeout(Some(Duration::from_secs(30)))?;
    Ok(c)
}

fn request(name: &str, script: &std::path::Path, policy: RestartPolicy) -> SpawnRequest {
    let mut req = SpawnRequest::new(name, script.display().to_string());
    req.interpreter = Some(String::new()); // the script runs itself (#!/bin/sh)
    req.restart_policy = policy;
    req.restart_backoff_ms = Some(0);
    req.max_restarts = u32::MAX;
    req.restart_window = 1.0;
    req
}

/// Runs the part: `runs` timed restarts (after a few untimed), then `runs` fresh SPAWNs.
pub fn measure_restart(kernel: &Kernel, runs: usize) -> Result<RestartResult> {
    progress(format_args!(
        "restart: {runs} restarts of a crashing sandboxed agent with zero backoff, then {runs} \
         SPAWNs of the same script"
    ));
    let script = CrashScript::create()?;
    let mut watcher = client(kernel)?;
    watcher.subscribe(&["AGENT_EXITED", "AGENT_SPAWNED"])?;
    let mut c = client(kernel)?;
    let agent = c.spawn(&request("crasher", &script.path, RestartPolicy::OnFailure))?;

    let warmup = 5;
    let mut samples = Vec::with_capacity(runs);
    let mut untimed = 0;
    // Restarts seen so far; the first `warmup` are not timed (the kernel's caches warm up).
    let mut pairs = 0;
    let mut exited_at: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while samples.len() < runs {
        if Instant::now() > deadline {
            bail!("only {} restarts seen in 120 s", samples.len());
        }
        let polled = watcher.poll_events(1000, Some(Duration::from_secs(5)))?;
        let now = Instant::now();
        let mut exit_in_this_poll = false;
        for e in polled
            .events
            .iter()
            .filter(|e| e.source_agent_id == agent.id)
        {
            match e.event_type.as_str() {
                "AGENT_EXITED" => {
                    if e.data.0["restarting"] != serde_json::json!(true) {
                        bail!("the crasher ended for good: {}", e.data.0);
                    }
                    exited_at = Some(now);
                    exit_in_this_poll = true;
                }
                "AGENT_SPAWNED" => {
                    if let Some(t) = exited_at.take() {
                        pairs += 1;
                        if pairs <= warmup {
                            continue;
                        }
                        if exit_in_this_poll {
                            untimed += 1;
                        } else {
                            samples.push((now - t).as_nanos() as u64);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    progress(format_args!(
        "  {} restarts timed; stopping the crasher",
        samples.len()
    ));
    c.kill(AgentRef::Id(agent.id))?;
    progress(format_args!("  crasher stopped; {runs} fresh SPAWNs"));

    let mut spawns = Vec::with_capacity(runs);
    for i in 0..runs {
        let t = Instant::now();
        let a = c.spawn(&request(
            &format!("fresh-{i}"),
            &script.path,
            RestartPolicy::Never,
        ))?;
        spawns.push(t.elapsed().as_nanos() as u64);
        c.wait(AgentRef::Id(a.id), Some(Duration::from_secs(10)))?;
    }
    Ok(RestartResult {
        runs,
        restart: summarize(&mut samples),
        spawn: summarize(&mut spawns),
        untimed,
    })
}
