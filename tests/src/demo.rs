//! Running `clove demo` against a test kernel and reading its report.
//!
//! The runner's `--json` report is `{"rows": [{demo, attack, result, evidence}], "all_contained"}`
//! with `result` one of `contained`, `escaped`, `error`; [`run_demo`] parses it into
//! [`DemoRow`]s and keeps the raw output for failure messages.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::{cli_bin, run_to_exit, Kernel};

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoRow {
    /// The demo (`fork-bomb`, ...).
    pub demo: String,
    /// The attack.
    pub attack: String,
    /// `contained`, `escaped` or `error`.
    pub result: String,
    /// Why the runner says so.
    pub evidence: String,
}

/// What one `clove demo` run printed.
#[derive(Debug)]
pub struct DemoRun {
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// The report's rows (empty when stdout held no report).
    pub rows: Vec<DemoRow>,
    /// stdout as printed.
    pub stdout: String,
    /// stderr as printed.
    pub stderr: String,
}

impl DemoRun {
    /// The rows as an aligned table, for assertion messages.
    pub fn table(&self) -> String {
        self.rows
            .iter()
            .map(|r| {
                format!(
                    "{:<14} {:<38} {:<9} {}\n",
                    r.demo, r.attack, r.result, r.evidence
                )
            })
            .collect()
    }

    /// The first row whose attack starts with `attack`.
    pub fn row(&self, attack: &str) -> Option<&DemoRow> {
        self.rows.iter().find(|r| r.attack.starts_with(attack))
    }
}

/// Runs `clove --socket <kernel> demo <args> [--json]` (killed after `limit`).
pub fn run_demo(kernel: &Kernel, args: &[&str], json: bool, limit: Duration) -> Result<DemoRun> {
    let mut cmd = Command::new(cli_bin());
    cmd.arg("--socket")
        .arg(&kernel.socket)
        .arg("demo")
        .args(args)
        .env_remove("CLOVE_SOCKET");
    if json {
        cmd.arg("--json");
    }
    let (status, stdout, stderr) = run_to_exit(&mut cmd, limit)?;
    let rows = if json && !stdout.trim().is_empty() {
        parse_rows(&stdout).with_context(|| format!("report: {stdout}\nstderr: {stderr}"))?
    } else {
        Vec::new()
    };
    Ok(DemoRun {
        code: status.code(),
        rows,
        stdout,
        stderr,
    })
}

fn parse_rows(stdout: &str) -> Result<Vec<DemoRow>> {
    let v: serde_json::Value =
        serde_json::from_str(stdout.trim()).context("parse the JSON report")?;
    let rows = v["rows"].as_array().context("no rows array")?;
    let field = |r: &serde_json::Value, k: &str| r[k].as_str().unwrap_or_default().to_owned();
    Ok(rows
        .iter()
        .map(|r| DemoRow {
            demo: field(r, "demo"),
            attack: field(r, "attack"),
            result: field(r, "result"),
            evidence: field(r, "evidence"),
        })
        .collect())
}
