//! The Prometheus endpoint (`--metrics-addr`), scraped over TCP on loopback and parsed with a
//! strict parser of the text format 0.0.4 (below): every family has HELP and TYPE, no series
//! twice, histograms consistent (cumulative buckets, `+Inf` = `_count`); the syscall counters
//! move by exactly the requests the test made, by opcode and result; 404 and 405 for the
//! wrong path or method. As root, the per-agent series (restarts, mailbox depth, cgroup
//! usage, LLM calls and tokens) appear for live agents and vanish once they are killed.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use clove_tests::{
    agents_can_run, client, kernel_command, kill_agent, plan_request, plan_step, run_to_exit,
    spawn_ok, spawn_request, wait_output_line, JsonConn, Kernel, KernelOpts,
};
use serde_json::json;

const NOOP: u8 = 0x00;
const THINK: u8 = 0x01;
const KILL: u8 = 0x11;
const UNASSIGNED: u8 = 0x13;
const SEND: u8 = 0x20;
const RECV: u8 = 0x21;

/// A series: its name and labels.
type Series = (String, BTreeMap<String, String>);

/// One parsed scrape.
#[derive(Debug, Default)]
struct Scrape {
    /// Family name → type.
    types: HashMap<String, String>,
    /// Family name → help text.
    help: HashMap<String, String>,
    samples: BTreeMap<Series, f64>,
}

/// Fails the parse with a message unless `cond` holds.
macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

impl Scrape {
    /// Parses the text format strictly: any line that is not a well-formed HELP, TYPE or
    /// sample is an error, as are a sample of an undeclared family, a family without HELP,
    /// TYPE after its samples, a series given twice and an inconsistent histogram.
    fn parse(text: &str) -> Result<Scrape, String> {
        let mut s = Scrape::default();
        check!(
            text.ends_with('\n'),
            "the exposition does not end with a newline"
        );
        for (n, line) in text.lines().enumerate() {
            let at = format!("line {}: {line:?}", n + 1);
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').ok_or(format!("no help: {at}"))?;
                check!(valid_name(name), "bad name: {at}");
                check!(!help.is_empty(), "empty help: {at}");
                check!(
                    s.help.insert(name.into(), help.into()).is_none(),
                    "HELP twice: {at}"
                );
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').ok_or(format!("no type: {at}"))?;
                check!(valid_name(name), "bad name: {at}");
                check!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "unknown type: {at}"
                );
                check!(
                    !s.samples
                        .keys()
                        .any(|(n, _)| family_of(n, &s.types) == Some(name)),
                    "TYPE after samples: {at}"
                );
                check!(
                    s.types.insert(name.into(), kind.into()).is_none(),
                    "TYPE twice: {at}"
                );
            } else if line.starts_with('#') {
                return Err(format!("unknown comment: {at}"));
            } else {
                let (series, value) = parse_sample(line).map_err(|e| format!("{e}: {at}"))?;
                let family =
                    family_of(&series.0, &s.types).ok_or(format!("no TYPE before: {at}"))?;
                check!(s.help.contains_key(family), "no HELP for {family}");
                check!(
                    s.samples.insert(series, value).is_none(),
                    "series twice: {at}"
                );
            }
        }
        s.check_histograms()?;
        Ok(s)
    }

    /// Every histogram series: `le` buckets rise with `le`, never fall, and end in `+Inf`
    /// equal to `_count`; `_sum` is there and not negative.
    fn check_histograms(&self) -> Result<(), String> {
        for (family, _) in self.types.iter().filter(|(_, k)| *k == "histogram") {
            let mut by_series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> =
                BTreeMap::new();
            for ((name, labels), v) in &self.samples {
                if name == &format!("{family}_bucket") {
                    let mut rest = labels.clone();
                    let le = rest
                        .remove("le")
                        .ok_or(format!("{family}: a bucket without le"))?;
                    by_series
                        .entry(rest)
                        .or_default()
                        .push((parse_value(&le)?, *v));
                }
            }
            check!(!by_series.is_empty(), "histogram {family} has no buckets");
            for (labels, mut buckets) in by_series {
                buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                for pair in buckets.windows(2) {
                    check!(
                        pair[0].1.total_cmp(&pair[1].1).is_le(),
                        "{family}{labels:?}: buckets not cumulative: {buckets:?}"
                    );
                }
                let (top, inf) = buckets[buckets.len() - 1];
                check!(top.is_infinite(), "{family}{labels:?}: no +Inf bucket");
                let count = self.value(&format!("{family}_count"), &labels);
                check!(
                    Some(inf) == count,
                    "{family}{labels:?}: +Inf {inf} != _count {count:?}"
                );
                let sum = self.value(&format!("{family}_sum"), &labels);
                check!(
                    sum.is_some_and(|s| s >= 0.0),
                    "{family}{labels:?}: _sum {sum:?}"
                );
            }
        }
        Ok(())
    }

    fn value(&self, name: &str, labels: &BTreeMap<String, String>) -> Option<f64> {
        self.samples
            .get(&(name.to_owned(), labels.clone()))
            .copied()
    }

    /// The value of `name` with exactly `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.value(name, &labels)
    }

    /// Like [`Scrape::get`], 0 when the series is absent (a counter not yet touched).
    fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    /// Every series carrying `agent_id="id"`.
    fn of_agent(&self, id: u32) -> Vec<&Series> {
        let id = id.to_string();
        self.samples
            .keys()
            .filter(|(_, l)| l.get("agent_id") == Some(&id))
            .collect()
    }
}

/// The family a sample name belongs to: itself, or a histogram's or summary's without the
/// suffix.
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let f = name.strip_suffix(suffix)?;
        matches!(
            types.get(f).map(String::as_str),
            Some("histogram" | "summary")
        )
        .then_some(f)
    })
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        v => v.parse().map_err(|e| format!("value {v:?}: {e}")),
    }
}

/// `name{k="v",...} value [timestamp]`.
fn parse_sample(line: &str) -> Result<(Series, f64), String> {
    let name_end = line.find(['{', ' ']).ok_or("no value after the name")?;
    let name = &line[..name_end];
    if !valid_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(mut r) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = r.strip_prefix('}') {
                r = after;
                break;
            }
            let eq = r.find('=').ok_or("a label without =")?;
            let key = &r[..eq];
            if !valid_name(key) || key.contains(':') {
                return Err(format!("bad label name {key:?}"));
            }
            r = r[eq + 1..]
                .strip_prefix('"')
                .ok_or("an unquoted label value")?;
            let mut value = String::new();
            let mut chars = r.char_indices();
            let end = loop {
                match chars.next().ok_or("an unterminated label value")? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next().ok_or("a dangling escape")?.1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        c => return Err(format!("bad escape \\{c}")),
                    },
                    (_, '\n') => return Err("a raw newline in a label value".into()),
                    (_, c) => value.push(c),
                }
            };
            if labels.insert(key.to_owned(), value).is_some() {
                return Err(format!("label {key} twice"));
            }
            r = &r[end + 1..];
            if let Some(after) = r.strip_prefix(',') {
                r = after;
            } else if !r.starts_with('}') {
                return Err("labels not separated by commas".into());
            }
        }
        rest = r;
    }
    let rest = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let mut parts = rest.split(' ');
    let value = parse_value(parts.next().ok_or("no value")?)?;
    if let Some(ts) = parts.next() {
        ts.parse::<i64>()
            .map_err(|e| format!("timestamp {ts:?}: {e}"))?;
    }
    if parts.next().is_some() {
        return Err("trailing fields".into());
    }
    Ok(((name.to_owned(), labels), value))
}

/// One HTTP/1.1 request on a fresh loopback connection: the status code, the headers
/// (lower-case names) and the body.
fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, HashMap<String, String>, String) {
    http_with(addr, method, path, "")
}

/// [`http`] with extra header lines (each ending in CRLF).
fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
) -> (u16, HashMap<String, String>, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap();
    assert!(status.starts_with("HTTP/1.1 "), "{status}");
    let code = status[9..12].parse().unwrap();
    let headers: HashMap<String, String> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    if let Some(len) = headers.get("content-length") {
        assert_eq!(len.parse::<usize>().unwrap(), body.len(), "content-length");
    }
    (code, headers, body.to_owned())
}

/// GET /metrics, checked and parsed.
fn scrape(addr: SocketAddr) -> Scrape {
    let (code, headers, body) = http(addr, "GET", "/metrics");
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    Scrape::parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"))
}

/// A kernel with the endpoint on a loopback port of its choosing, and that address.
fn kernel() -> (Kernel, SocketAddr) {
    let kernel = Kernel::start_with(KernelOpts {
        args: vec!["--metrics-addr".into(), "127.0.0.1:0".into()],
        ..KernelOpts::default()
    })
    .unwrap();
    let text = std::fs::read_to_string(kernel.state_dir.join("metrics.addr")).unwrap();
    let addr: SocketAddr = text.trim().parse().unwrap();
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    (kernel, addr)
}

/// The change of the syscall counter for `opcode` and `result` between two scrapes.
fn calls(before: &Scrape, after: &Scrape, opcode: &str, result: &str) -> f64 {
    let l = [("opcode", opcode), ("result", result)];
    after.count("clove_syscalls_total", &l) - before.count("clove_syscalls_total", &l)
}

#[test]
fn syscalls_are_counted_by_opcode_and_result_and_timed() {
    let (kernel, addr) = kernel();
    // Opened first: its HELLO is counted before the first scrape.
    let mut c = JsonConn::open(&kernel).unwrap();
    let before = scrape(addr);
    // What a kernel without agents shows.
    assert_eq!(before.get("clove_agents_alive", &[]), Some(0.0));
    for state in ["running", "paused", "stopped", "failed"] {
        assert_eq!(before.get("clove_agents", &[("state", state)]), Some(0.0));
    }
    assert_eq!(before.get("clove_llm_max_in_flight", &[]), Some(4.0));
    assert!(
        before
            .get("clove_kernel_resident_memory_bytes", &[])
            .unwrap()
            > 0.0
    );
    assert!(before.get("clove_kernel_threads", &[]).unwrap() >= 1.0);
    assert!(before.get("clove_kernel_open_fds", &[]).unwrap() >= 3.0);
    assert!(before.get("clove_kernel_uptime_seconds", &[]).unwrap() >= 0.0);
    assert_eq!(before.types["clove_syscalls_total"], "counter");
    assert_eq!(before.types["clove_syscall_duration_seconds"], "histogram");

    for _ in 0..3 {
        assert_eq!(c.call(NOOP, json!({"n": 1})).unwrap(), json!({"n": 1}));
    }
    let r = c.call(KILL, json!({"id": 999_999})).unwrap();
    assert_eq!(r["code"], "not_found", "{r}");
    let r = c.call(UNASSIGNED, json!({})).unwrap();
    assert_eq!(r["code"], "unknown_opcode", "{r}");
    let r = c.call(THINK, json!({"prompt": "count to three"})).unwrap();
    assert_eq!(r["success"], true, "{r}");

    let after = scrape(addr);
    assert_eq!(calls(&before, &after, "NOOP", "ok"), 3.0);
    assert_eq!(calls(&before, &after, "KILL", "not_found"), 1.0);
    assert_eq!(calls(&before, &after, "KILL", "ok"), 0.0);
    assert_eq!(calls(&before, &after, "0x13", "unknown_opcode"), 1.0);
    assert_eq!(calls(&before, &after, "THINK", "ok"), 1.0);
    // Nothing else was asked between the scrapes (the scrapes are not syscalls).
    let total = |s: &Scrape| {
        s.samples
            .iter()
            .filter(|((n, _), _)| n == "clove_syscalls_total")
            .map(|(_, v)| v)
            .sum::<f64>()
    };
    assert_eq!(total(&after) - total(&before), 6.0);
    // The histogram counted the same requests.
    let timed =
        |s: &Scrape, op: &str| s.count("clove_syscall_duration_seconds_count", &[("opcode", op)]);
    assert_eq!(timed(&after, "NOOP") - timed(&before, "NOOP"), 3.0);
    assert_eq!(timed(&after, "THINK") - timed(&before, "THINK"), 1.0);
    let noop_inf = after
        .get(
            "clove_syscall_duration_seconds_bucket",
            &[("opcode", "NOOP"), ("le", "+Inf")],
        )
        .unwrap();
    assert_eq!(noop_inf, timed(&after, "NOOP"));
    // This connection is open.
    assert!(after.get("clove_connections_open", &[]).unwrap() >= 1.0);

    // The wrong path and the wrong method.
    let (code, _, _) = http(addr, "GET", "/");
    assert_eq!(code, 404);
    let (code, _, _) = http(addr, "GET", "/metricsx");
    assert_eq!(code, 404);
    let (code, headers, _) = http(addr, "POST", "/metrics");
    assert_eq!(code, 405);
    assert_eq!(headers["allow"], "GET, HEAD");

    // OpenMetrics for a scraper that asks for it.
    let (code, headers, body) = http_with(
        addr,
        "GET",
        "/metrics",
        "Accept: application/openmetrics-text; version=1.0.0\r\n",
    );
    assert_eq!(code, 200);
    assert!(headers["content-type"].starts_with("application/openmetrics-text"));
    assert!(body.ends_with("# EOF\n"), "{body}");

    // A second kernel cannot take the port: it does not start (exit 1), and says why.
    let other = tempfile::tempdir().unwrap();
    let (status, _, err) = run_to_exit(
        kernel_command()
            .arg("--socket")
            .arg(other.path().join("k.sock"))
            .arg("--state-dir")
            .arg(other.path().join("state"))
            .arg("--no-compat-socket")
            .arg("--metrics-addr")
            .arg(addr.to_string()),
        Duration::from_secs(20),
    )
    .unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("metrics_addr {addr}: cannot listen")),
        "{err}"
    );
    assert!(!other.path().join("k.sock").exists());
    assert!(!other.path().join("state/metrics.addr").exists());

    // The endpoint goes with the kernel, and so does its address file.
    let state_dir = kernel.state_dir.clone();
    let (status, _) = kernel.stop_and_collect().unwrap();
    assert!(status.success(), "{status}");
    assert!(!state_dir.join("metrics.addr").exists());
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
}

#[test]
fn per_agent_series_appear_for_live_agents_and_vanish_when_killed() {
    if !agents_can_run("per_agent_series_appear_for_live_agents_and_vanish_when_killed") {
        return;
    }
    let (kernel, addr) = kernel();
    let mut c = client(&kernel).unwrap();
    let before = scrape(addr);

    // One agent that sleeps (its mailbox fills), one that THINKs and then waits in RECV.
    let sleeper = spawn_ok(&mut c, &spawn_request("prom-sleeper", "agent_sleep.py"))
        .unwrap()
        .id;
    let thinker = spawn_ok(
        &mut c,
        &plan_request(
            "prom-thinker",
            &json!([
                {"op": THINK, "payload": {"prompt": "hello there", "max_tokens": 8}},
                {"op": RECV, "payload": {"max": 1, "wait_ms": 60_000}},
            ]),
        ),
    )
    .unwrap()
    .id;
    wait_output_line(&kernel, sleeper, "READY", Duration::from_secs(30)).unwrap();
    let step = plan_step(&kernel, thinker, 0, Duration::from_secs(30)).unwrap();
    assert_eq!(step["reply"]["success"], true, "{step}");
    let mut conn = JsonConn::open(&kernel).unwrap();
    for n in 0..2 {
        let r = conn
            .call(SEND, json!({"to": sleeper, "message": {"n": n}}))
            .unwrap();
        assert_eq!(r["success"], true, "{r}");
    }

    let during = scrape(addr);
    assert_eq!(during.get("clove_agents_alive", &[]), Some(2.0));
    assert_eq!(
        during.get("clove_agents", &[("state", "running")]),
        Some(2.0)
    );
    let sleeper_id = sleeper.to_string();
    let thinker_id = thinker.to_string();
    let s = [("agent_id", sleeper_id.as_str()), ("agent", "prom-sleeper")];
    let t = [("agent_id", thinker_id.as_str()), ("agent", "prom-thinker")];
    assert_eq!(during.get("clove_agent_restarts_total", &s), Some(0.0));
    assert_eq!(during.get("clove_agent_mailbox_messages", &s), Some(2.0));
    assert_eq!(during.get("clove_agent_mailbox_messages", &t), Some(0.0));
    for (labels, name) in [(&s, "prom-sleeper"), (&t, "prom-thinker")] {
        let memory = during.get("clove_agent_memory_bytes", labels);
        assert!(memory.unwrap_or(0.0) > 0.0, "{name}: memory {memory:?}");
        let pids = during.get("clove_agent_pids", labels);
        assert!(pids.unwrap_or(0.0) >= 1.0, "{name}: pids {pids:?}");
        let cpu = during.get("clove_agent_cpu_seconds_total", labels);
        assert!(cpu.is_some_and(|v| v >= 0.0), "{name}: cpu {cpu:?}");
    }
    let with = |k: &'static str, v: &'static str| {
        let mut l = t.to_vec();
        l.push((k, v));
        l
    };
    assert_eq!(
        during.get("clove_llm_calls_total", &with("result", "ok")),
        Some(1.0)
    );
    assert_eq!(
        during.get("clove_llm_calls_total", &with("result", "error")),
        Some(0.0)
    );
    assert!(
        during
            .get("clove_llm_tokens_total", &with("kind", "output"))
            .unwrap()
            > 0.0
    );
    assert!(during.get("clove_llm_queue_wait_max_seconds", &t).unwrap() >= 0.0);
    // The sleeper never THINKs: it has no LLM series.
    assert_eq!(
        during.get("clove_llm_calls_total", &{
            let mut l = s.to_vec();
            l.push(("result", "ok"));
            l
        }),
        None
    );
    // Exactly what happened: two SPAWNs and two SENDs here, the thinker's THINK.
    assert_eq!(calls(&before, &during, "SPAWN", "ok"), 2.0);
    assert_eq!(calls(&before, &during, "SEND", "ok"), 2.0);
    assert_eq!(calls(&before, &during, "THINK", "ok"), 1.0);

    kill_agent(&mut c, sleeper).unwrap();
    kill_agent(&mut c, thinker).unwrap();
    let after = scrape(addr);
    assert!(
        after.of_agent(sleeper).is_empty(),
        "{:?}",
        after.of_agent(sleeper)
    );
    assert!(
        after.of_agent(thinker).is_empty(),
        "{:?}",
        after.of_agent(thinker)
    );
    assert_eq!(after.get("clove_agents_alive", &[]), Some(0.0));
    assert_eq!(
        after.get("clove_agents", &[("state", "running")]),
        Some(0.0)
    );
    let stopped = |s: &Scrape| s.count("clove_agents", &[("state", "stopped")]);
    assert_eq!(stopped(&after) - stopped(&during), 2.0);
    assert_eq!(calls(&during, &after, "KILL", "ok"), 2.0);
}

#[test]
fn the_parser_refuses_malformed_expositions() {
    for bad in [
        "x 1\n",                                        // no TYPE
        "# TYPE x gauge\nx 1\n",                        // no HELP
        "# HELP x h\n# TYPE x gauge\nx{a=\"1} 1\n",     // unterminated value
        "# HELP x h\n# TYPE x gauge\nx{a=1} 1\n",       // unquoted value
        "# HELP x h\n# TYPE x gauge\nx 1\nx 2\n",       // a series twice
        "# HELP x h\n# TYPE x gauge\nx one\n",          // not a number
        "# HELP x h\n# TYPE x gauge\nx{a=\"\\t\"} 1\n", // a bad escape
        "# HELP x h\n# TYPE x gaug\nx 1\n",             // unknown type
        "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n\
         h_count 1\nh_sum 0\n", // buckets fall
        "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 1\nh_sum 0\n", // +Inf != count
    ] {
        assert!(Scrape::parse(bad).is_err(), "accepted: {bad:?}");
    }
    let ok = Scrape::parse(
        "# HELP h h\n# TYPE h histogram\nh_bucket{a=\"x\\\"y\\n\",le=\"0.5\"} 1\n\
         h_bucket{a=\"x\\\"y\\n\",le=\"+Inf\"} 2\nh_count{a=\"x\\\"y\\n\"} 2\n\
         h_sum{a=\"x\\\"y\\n\"} 0.7\n",
    )
    .unwrap();
    assert_eq!(ok.get("h_count", &[("a", "x\"y\n")]), Some(2.0));
}
