//! `clove audit verify|head|log|config`: the kernel's hash-chained audit log.
//!
//! `verify` and `head` read the log directory directly (kernel up or down); `log` and
//! `config` ask the kernel (GET_AUDIT_LOG, SET_AUDIT_CONFIG).

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;
use clove_sdk::audit::{default_audit_dir, read_head, verify_dir};
use clove_sdk::msg::{AuditCategory, GetAuditLogRequest, SetAuditConfigRequest};
use clove_sdk::Client;

use crate::table::Table;
use crate::{as_json, Failure, ResultExt};

/// `clove audit`'s subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum AuditCmd {
    /// Check the log offline: every entry's hash, the chain across files, and its end against
    /// the anchor. Exit 0 when intact, 1 with the findings when not
    #[command(
        after_help = "Detects an edited, deleted, inserted or reordered entry, a file cut short or\nremoved, and a tampered anchor (audit.head). Works whether the kernel runs or not.\n\nExamples:\n  clove audit verify\n  clove audit verify --dir /var/lib/clove/audit --json"
    )]
    Verify {
        /// The audit directory [default: <state dir>/audit: $CLOVE_STATE_DIR, else the
        /// kernel's default state dir]
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Print the anchor (the chain's head: last id and hash) to keep elsewhere; a later
    /// `verify` plus a comparison with the kept head detects a rewrite of the whole log
    Head {
        /// The audit directory [default: <state dir>/audit]
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Print audit entries, oldest first (GET_AUDIT_LOG)
    #[command(
        after_help = "Without --since-id: from the oldest entry the kernel holds in memory (the last\n10000 by default); with it, older entries are read from the files.\n\nExamples:\n  clove audit log --category security\n  clove audit log --agent 7 --limit 20\n  clove audit log --since-id 1200 --json"
    )]
    Log {
        /// Only this category: SECURITY, AGENT_LIFECYCLE, IPC, STATE_STORE, RESOURCE,
        /// SYSCALL, NETWORK, WORLD (any case)
        #[arg(long, value_name = "CATEGORY")]
        category: Option<String>,
        /// Only entries about this agent id
        #[arg(long, value_name = "ID")]
        agent: Option<u32>,
        /// At most this many entries
        #[arg(long, default_value_t = clove_sdk::msg::DEFAULT_AUDIT_LIMIT)]
        limit: u32,
        /// Only entries with a greater id (for polling)
        #[arg(long, value_name = "ID")]
        since_id: Option<u64>,
    },
    /// Show or change what is audited (SET_AUDIT_CONFIG; changes: root only)
    Config {
        /// Entries the kernel keeps in memory for `log`
        #[arg(long, value_name = "N")]
        max_entries: Option<u64>,
        /// Log every syscall (SYSCALL)
        #[arg(long, value_name = "BOOL")]
        log_syscalls: Option<bool>,
        /// Log SECURITY events
        #[arg(long, value_name = "BOOL")]
        log_security: Option<bool>,
        /// Log AGENT_LIFECYCLE events
        #[arg(long, value_name = "BOOL")]
        log_lifecycle: Option<bool>,
        /// Log IPC events
        #[arg(long, value_name = "BOOL")]
        log_ipc: Option<bool>,
        /// Log STATE_STORE events
        #[arg(long, value_name = "BOOL")]
        log_state: Option<bool>,
        /// Log RESOURCE events
        #[arg(long, value_name = "BOOL")]
        log_resource: Option<bool>,
        /// Log NETWORK events
        #[arg(long, value_name = "BOOL")]
        log_network: Option<bool>,
        /// Log WORLD events
        #[arg(long, value_name = "BOOL")]
        log_world: Option<bool>,
    },
}

impl AuditCmd {
    /// Whether the command works without a kernel.
    pub fn offline(&self) -> bool {
        matches!(self, AuditCmd::Verify { .. } | AuditCmd::Head { .. })
    }
}

/// Runs `verify` or `head`, which need no kernel.
pub fn run_offline(out: &mut impl Write, json: bool, cmd: &AuditCmd) -> Result<(), Failure> {
    match cmd {
        AuditCmd::Verify { dir } => {
            let dir = dir.clone().unwrap_or_else(default_audit_dir);
            let report = verify_dir(&dir)
                .map_err(|e| Failure::other(format!("verify {}", dir.display()), e.to_string()))?;
            if json {
                writeln!(out, "{}", as_json(&report))?;
            } else {
                write_report(out, &dir, &report)?;
            }
            if report.intact {
                Ok(())
            } else {
                Err(Failure::Exit(1))
            }
        }
        AuditCmd::Head { dir } => {
            let dir = dir.clone().unwrap_or_else(default_audit_dir);
            let head = read_head(&dir).map_err(|e| {
                Failure::other(format!("read the head in {}", dir.display()), e.to_string())
            })?;
            if json {
                writeln!(out, "{}", as_json(&head))?;
            } else {
                writeln!(out, "last_id     {}", head.last_id)?;
                writeln!(out, "last_hash   {}", head.last_hash)?;
                writeln!(out, "first_id    {}", head.first_id)?;
                writeln!(out, "first_prev  {}", head.first_prev)?;
                writeln!(out, "entries     {}", head.entries)?;
                writeln!(out, "files       {}", head.files)?;
                writeln!(out, "updated     {}", head.updated)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn write_report(
    out: &mut impl Write,
    dir: &std::path::Path,
    r: &clove_sdk::auditlog::Report,
) -> Result<(), Failure> {
    let span = match (r.first_id, r.last_id) {
        (Some(a), Some(b)) => format!("ids {a}..{b}"),
        _ => "no entries".to_owned(),
    };
    let verdict = if r.intact { "intact" } else { "NOT INTACT" };
    writeln!(
        out,
        "audit log {}: {verdict}: {} entr{} ({span}) in {} file(s)",
        dir.display(),
        r.entries,
        if r.entries == 1 { "y" } else { "ies" },
        r.files.len()
    )?;
    if let Some(a) = &r.anchor {
        writeln!(out, "anchor: last id {} hash {}", a.last_id, a.last_hash)?;
    }
    for f in &r.findings {
        let kind = serde_json::to_value(f.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        writeln!(out, "  {kind}: {}", f.message)?;
    }
    for n in &r.notes {
        writeln!(out, "  note: {n}")?;
    }
    Ok(())
}

/// Runs `log` or `config` against the kernel.
pub fn run(
    client: &mut Client,
    out: &mut impl Write,
    json: bool,
    cmd: &AuditCmd,
) -> Result<(), Failure> {
    match cmd {
        AuditCmd::Log {
            category,
            agent,
            limit,
            since_id,
        } => {
            if let Some(c) = category {
                if AuditCategory::parse(c).is_none() {
                    return Err(Failure::other(
                        "audit log",
                        format!("unknown category {c:?} (SECURITY, AGENT_LIFECYCLE, IPC, STATE_STORE, RESOURCE, SYSCALL, NETWORK, WORLD)"),
                    )
                    .with_status(2));
                }
            }
            let req = GetAuditLogRequest {
                category: category.clone(),
                agent_id: *agent,
                since_id: *since_id,
                limit: *limit,
            };
            let r = client.get_audit_log(&req).ctx("read the audit log")?;
            if json {
                writeln!(out, "{}", as_json(&r))?;
                return Ok(());
            }
            let mut t = Table::new(&[
                "ID",
                "TIME",
                "CATEGORY",
                "EVENT",
                "AGENT",
                "OK",
                "DECIDED_BY",
                "DETAILS",
            ]);
            for e in &r.entries {
                let agent = match &e.agent_name {
                    Some(n) => format!("{} ({n})", e.agent_id),
                    None => e.agent_id.to_string(),
                };
                t.push(vec![
                    e.id.to_string(),
                    e.timestamp.clone(),
                    e.category.as_str().to_owned(),
                    e.event_type.clone(),
                    agent,
                    if e.success { "yes" } else { "NO" }.to_owned(),
                    e.decided_by.clone().unwrap_or_default(),
                    e.details.0.to_string(),
                ]);
            }
            out.write_all(t.render().as_bytes())?;
        }
        AuditCmd::Config {
            max_entries,
            log_syscalls,
            log_security,
            log_lifecycle,
            log_ipc,
            log_state,
            log_resource,
            log_network,
            log_world,
        } => {
            let req = SetAuditConfigRequest {
                max_entries: *max_entries,
                log_syscalls: *log_syscalls,
                log_security: *log_security,
                log_lifecycle: *log_lifecycle,
                log_ipc: *log_ipc,
                log_state: *log_state,
                log_resource: *log_resource,
                log_network: *log_network,
                log_world: *log_world,
            };
            let r = client
                .set_audit_config(&req)
                .ctx("set the audit configuration")?;
            if json {
                writeln!(out, "{}", as_json(&r))?;
            } else {
                let c = r.config;
                writeln!(out, "max_entries    {}", c.max_entries)?;
                for category in AuditCategory::ALL {
                    writeln!(
                        out,
                        "{:<14} {}",
                        category.as_str(),
                        if c.logs(category) { "logged" } else { "off" }
                    )?;
                }
            }
        }
        AuditCmd::Verify { .. } | AuditCmd::Head { .. } => return run_offline(out, json, cmd),
    }
    Ok(())
}
