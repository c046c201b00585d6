//! `clove top`: a live view of the agents, redrawn every interval, like `top`: state, CPU,
//! memory against its limit, processes against their limit, restarts, uptime and LLM tokens.
//!
//! Each frame is three reads: LIST with `detail` (every live agent, its state and restarts),
//! METRICS_ALL_AGENTS (CPU and memory from the agent's process and cgroup) and LLM_STATS
//! (tokens). A kernel without the metrics opcodes still gets a view, with `-` where a figure
//! is missing. On a terminal each frame replaces the last; piped, frames follow each other
//! (`clove top --once` prints one and exits).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::Args;
use clove_sdk::msg::{
    AgentEntry, AgentMetrics, LlmStatsRequest, MetricsAllAgentsReply, MetricsAllAgentsRequest,
};
use clove_sdk::Client;

use crate::agents::human_bytes;
use crate::table::{uptime, Table};
use crate::{as_json, Failure, ResultExt};

/// `clove top`'s arguments.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// Seconds between frames
    #[arg(short = 'n', long, default_value_t = 2.0, value_name = "SECS")]
    pub interval: f64,
    /// Print one frame and exit
    #[arg(long)]
    pub once: bool,
}

/// One agent's row, from the three reads.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Row {
    /// The agent's id.
    pub id: u32,
    /// Its name.
    pub name: String,
    /// RUNNING, PAUSED, ...
    pub state: String,
    /// CPU use, percent of one CPU.
    pub cpu_percent: Option<f64>,
    /// Memory in use (the cgroup's, else the process's RSS), bytes.
    pub memory: Option<u64>,
    /// The memory limit, bytes.
    pub memory_max: Option<u64>,
    /// Processes and threads in the cgroup.
    pub pids: Option<u64>,
    /// Their limit.
    pub pids_max: Option<u64>,
    /// Restarts by its policy.
    pub restarts: u32,
    /// Uptime of the current run, ms.
    pub uptime_ms: Option<u64>,
    /// LLM tokens used (input and output).
    pub llm_tokens: Option<u64>,
}

/// The rows of one frame: live agents, busiest CPU first, then by id.
pub fn rows(list: &[AgentEntry], metrics: &[AgentMetrics], tokens: &HashMap<u32, u64>) -> Vec<Row> {
    let by_id: HashMap<u32, &AgentMetrics> = metrics.iter().map(|m| (m.agent_id, m)).collect();
    let mut rows: Vec<Row> = list
        .iter()
        .filter(|a| a.running)
        .map(|a| {
            let m = by_id.get(&a.id);
            let cgroup = m.and_then(|m| m.cgroup.as_ref());
            Row {
                id: a.id,
                name: a.name.clone(),
                state: a.state.as_str().to_owned(),
                // The whole sandbox (the agent and what it forked) when the kernel reports
                // it, as for memory; else the agent's process alone.
                cpu_percent: cgroup
                    .and_then(|c| c.cpu.percent)
                    .or_else(|| m.map(|m| m.process.cpu.percent)),
                memory: cgroup
                    .map(|c| c.memory.current)
                    .or_else(|| m.map(|m| m.process.memory.rss)),
                memory_max: cgroup.and_then(|c| c.memory.max),
                pids: cgroup.map(|c| c.pids.current),
                pids_max: cgroup.and_then(|c| c.pids.max),
                restarts: a.restarts.unwrap_or(0),
                uptime_ms: a.uptime_ms,
                llm_tokens: tokens.get(&a.id).copied(),
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        b.cpu_percent
            .unwrap_or(0.0)
            .total_cmp(&a.cpu_percent.unwrap_or(0.0))
            .then(a.id.cmp(&b.id))
    });
    rows
}

/// `used/limit (pct%)`, `used` alone without a limit, `-` without a figure.
fn against(used: Option<u64>, max: Option<u64>, show: impl Fn(u64) -> String) -> String {
    match (used, max) {
        (None, _) => "-".into(),
        (Some(u), None) => show(u),
        (Some(u), Some(m)) if m > 0 => {
            format!(
                "{}/{} ({:.0}%)",
                show(u),
                show(m),
                100.0 * u as f64 / m as f64
            )
        }
        (Some(u), Some(m)) => format!("{}/{}", show(u), show(m)),
    }
}

/// One frame as text.
pub fn frame(rows: &[Row], note: Option<&str>) -> String {
    let mut t = Table::new(&[
        "ID",
        "NAME",
        "STATE",
        "CPU%",
        "MEMORY",
        "PIDS",
        "RESTARTS",
        "UPTIME",
        "LLM TOKENS",
    ]);
    for r in rows {
        t.push(vec![
            r.id.to_string(),
            r.name.clone(),
            r.state.clone(),
            r.cpu_percent.map_or("-".into(), |c| format!("{c:.1}")),
            against(r.memory, r.memory_max, human_bytes),
            against(r.pids, r.pids_max, |n| n.to_string()),
            r.restarts.to_string(),
            r.uptime_ms.map_or("-".into(), uptime),
            r.llm_tokens.map_or("-".into(), |t| t.to_string()),
        ]);
    }
    let mut text = format!("{} agent(s)", rows.len());
    if let Some(note) = note {
        text.push_str(&format!(" ({note})"));
    }
    text.push('\n');
    text.push_str(&t.render());
    text
}

/// Reads one frame's rows; the note says what was missing.
fn read(client: &mut Client) -> Result<(Vec<Row>, Option<String>), Failure> {
    let list = client.list_detail().ctx("list agents")?;
    let (metrics, note) = match client.call(&MetricsAllAgentsRequest {}) {
        Ok(MetricsAllAgentsReply { agents, .. }) => (agents, None),
        Err(e) if e.code().is_some() => (Vec::new(), Some(format!("no metrics: {e}"))),
        Err(e) => return Err(Failure::call("read agent metrics", e)),
    };
    let tokens: HashMap<u32, u64> = match client.call(&LlmStatsRequest::default()) {
        Ok(r) => r
            .agents
            .iter()
            .map(|a| (a.agent_id, a.input_tokens + a.output_tokens))
            .collect(),
        Err(e) if e.code().is_some() => HashMap::new(),
        Err(e) => return Err(Failure::call("read LLM figures", e)),
    };
    Ok((rows(&list, &metrics, &tokens), note))
}

/// `clove top`.
pub fn top(
    client: &mut Client,
    out: &mut impl Write,
    json: bool,
    args: &TopArgs,
) -> Result<(), Failure> {
    let interval = Duration::try_from_secs_f64(args.interval)
        .ok()
        .filter(|d| *d >= Duration::from_millis(100))
        .ok_or_else(|| Failure::other("top", "--interval must be at least 0.1 seconds"))?;
    let clear = !args.once && !json && std::io::stdout().is_terminal();
    loop {
        let (rows, note) = read(client)?;
        if json {
            writeln!(out, "{}", as_json(&rows))?;
        } else {
            if clear {
                // Home and clear: the new frame replaces the last one.
                write!(out, "\x1b[H\x1b[2J")?;
            }
            write!(out, "{}", frame(&rows, note.as_deref()))?;
            if !clear && !args.once {
                writeln!(out)?;
            }
        }
        out.flush()?;
        if args.once {
            return Ok(());
        }
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clove_sdk::msg::{AgentState, CgroupMemory, CgroupMetrics, CgroupPids};

    fn entry(id: u32, name: &str, running: bool) -> AgentEntry {
        AgentEntry {
            id,
            name: name.into(),
            pid: 100 + id as i32,
            state: if running {
                AgentState::Running
            } else {
                AgentState::Stopped
            },
            running,
            restarts: Some(id),
            uptime_ms: Some(61_000),
            ..AgentEntry::default()
        }
    }

    fn metrics(id: u32, cpu: f64, mem: u64, max: Option<u64>) -> AgentMetrics {
        let mut m = AgentMetrics {
            agent_id: id,
            ..AgentMetrics::default()
        };
        m.process.cpu.percent = cpu;
        m.process.memory.rss = 1;
        m.cgroup = Some(CgroupMetrics {
            memory: CgroupMemory {
                current: mem,
                max,
                ..CgroupMemory::default()
            },
            pids: CgroupPids {
                current: 3,
                max: Some(16),
            },
            ..CgroupMetrics::default()
        });
        m
    }

    #[test]
    fn rows_join_the_reads_busiest_first_and_skip_exited_agents() {
        let list = [
            entry(1, "a", true),
            entry(2, "b", true),
            entry(3, "gone", false),
        ];
        let m = [
            metrics(1, 5.0, 10 << 20, None),
            metrics(2, 50.0, 64 << 20, Some(128 << 20)),
        ];
        let tokens = HashMap::from([(2, 1234)]);
        let rows = rows(&list, &m, &tokens);
        assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), [2, 1]);
        assert_eq!(rows[0].memory_max, Some(128 << 20));
        assert_eq!(rows[0].llm_tokens, Some(1234));
        assert_eq!(rows[1].llm_tokens, None);
        let text = frame(&rows, None);
        assert!(text.starts_with("2 agent(s)\n"), "{text}");
        assert!(text.contains("64 MiB/128 MiB (50%)"), "{text}");
        assert!(text.contains("3/16 (19%)"), "{text}");
        assert!(!text.contains("gone"), "{text}");
    }

    #[test]
    fn a_kernel_without_metrics_still_gets_rows() {
        let rows = rows(&[entry(4, "solo", true)], &[], &HashMap::new());
        let text = frame(&rows, Some("no metrics: not implemented"));
        assert!(
            text.starts_with("1 agent(s) (no metrics: not implemented)"),
            "{text}"
        );
        let line = text.lines().nth(2).expect("a row");
        assert!(line.contains("solo") && line.contains(" - "), "{line}");
    }
}
