//! METRICS_SYSTEM, METRICS_AGENT, METRICS_ALL_AGENTS, METRICS_CGROUP.

use clove_abi::codec::encode;
use clove_abi::msg::{
    AgentMetrics, CgroupCpu, CgroupMemory, CgroupMetrics, CgroupPids, IoBytes, MetricsAgentReply,
    MetricsAgentRequest, MetricsAllAgentsReply, MetricsAllAgentsRequest, MetricsCgroupReply,
    MetricsCgroupRequest, MetricsSystemReply, MetricsSystemRequest, ProcessCpu, ProcessMemory,
    ProcessMetrics, SystemCpu, SystemDisk, SystemMemory, SystemMetrics, SystemNetwork,
};
use clove_abi::Codec;
use serde_json::json;

use crate::{golden, hex, parse, read, reject, sent};

// ---------------------------------------------------------------- METRICS_SYSTEM

#[test]
fn metrics_system_golden() {
    golden(&MetricsSystemRequest {}, "{}", "");
    let _: MetricsSystemRequest = parse("");
    let _: MetricsSystemRequest = parse(r#"{"ignored": 1}"#);
}

#[test]
fn metrics_system_reply_has_the_original_keys() {
    let r = MetricsSystemReply {
        success: true,
        metrics: SystemMetrics {
            timestamp: 1_700_000_000_000,
            cpu: SystemCpu {
                percent: 12.5,
                per_core: vec![25.0, 0.0],
                count: 2,
                load_avg: [0.5, 1.0, 2.0],
            },
            memory: SystemMemory {
                total: 1024,
                available: 256,
                used: 768,
                percent: 75.0,
            },
            disk: SystemDisk {
                read_bytes: 1,
                write_bytes: 2,
            },
            network: SystemNetwork {
                bytes_sent: 3,
                bytes_recv: 4,
            },
        },
    };
    assert_eq!(
        sent(&r),
        json!({"success": true, "metrics": {
            "timestamp": 1_700_000_000_000_u64,
            "cpu": {"percent": 12.5, "per_core": [25.0, 0.0], "count": 2,
                    "load_avg": [0.5, 1.0, 2.0]},
            "memory": {"total": 1024, "available": 256, "used": 768, "percent": 75.0},
            "disk": {"read_bytes": 1, "write_bytes": 2},
            "network": {"bytes_sent": 3, "bytes_recv": 4}
        }})
    );
    // timestamp 1700000000000 as a varint; f64s little-endian (12.5 = 0x4029.., 25.0 =
    // 0x4039.., 0.5 = 0x3fe0.., 1.0 = 0x3ff0.., 2.0 = 0x4000.., 75.0 = 0x4052c0..); per_core
    // has a length (02), load_avg is a fixed array (no length); 1024 = 80 08, 256 = 80 02,
    // 768 = 80 06.
    assert_eq!(
        encode(Codec::Postcard, &r).unwrap(),
        hex("01
             80 d0 95 ff bc 31
             00 00 00 00 00 00 29 40
             02  00 00 00 00 00 00 39 40  00 00 00 00 00 00 00 00
             02
             00 00 00 00 00 00 e0 3f  00 00 00 00 00 00 f0 3f  00 00 00 00 00 00 00 40
             80 08  80 02  80 06  00 00 00 00 00 c0 52 40
             01 02
             03 04")
    );
    // Integers where floats go, as a Python kernel writes them.
    let back: MetricsSystemReply = read(
        r#"{"success": true, "metrics": {"timestamp": 1700000000000,
            "cpu": {"percent": 3, "per_core": [1, 5.5], "count": 2, "load_avg": [0.1, 0.2, 0]},
            "memory": {"total": 8000, "available": 6000, "used": 2000, "percent": 25},
            "disk": {"read_bytes": 10, "write_bytes": 20},
            "network": {"bytes_sent": 30, "bytes_recv": 40}}}"#,
    );
    assert_eq!(back.metrics.cpu.percent, 3.0);
    assert_eq!(back.metrics.cpu.per_core, vec![1.0, 5.5]);
    assert_eq!(back.metrics.cpu.load_avg, [0.1, 0.2, 0.0]);
    assert_eq!(back.metrics.memory.percent, 25.0);
    assert_eq!(back.metrics.network.bytes_recv, 40);
}

// ---------------------------------------------------------------- METRICS_AGENT

#[test]
fn metrics_agent_golden() {
    golden(&MetricsAgentRequest { agent_id: None }, "{}", "00");
    golden(
        &MetricsAgentRequest { agent_id: Some(7) },
        r#"{"agent_id":7}"#,
        "01 07",
    );
}

#[test]
fn metrics_agent_as_the_original_sdk_sends_it() {
    let r: MetricsAgentRequest = parse("{}");
    assert_eq!((r.agent_id, r.agent(5)), (None, 5));
    let r: MetricsAgentRequest = parse(r#"{"agent_id": null}"#);
    assert_eq!(r.agent(5), 5);
    let r: MetricsAgentRequest = parse(r#"{"agent_id": 9}"#);
    assert_eq!(r.agent(5), 9);
}

#[test]
fn metrics_agent_rejections_name_the_field() {
    let e = reject::<MetricsAgentRequest>(r#"{"agent_id": "me"}"#);
    assert!(
        e.starts_with(r#"agent_id: invalid type: string "me", expected u32"#),
        "{e}"
    );
    let e = reject::<MetricsAgentRequest>(r#"{"agent_id": -1}"#);
    assert!(
        e.starts_with("agent_id: invalid value: integer `-1`, expected u32"),
        "{e}"
    );
}

fn worker() -> AgentMetrics {
    AgentMetrics {
        agent_id: 7,
        name: "w".into(),
        pid: 1234,
        status: "RUNNING".into(),
        uptime_ms: 1500,
        process: ProcessMetrics {
            pid: 1234,
            cpu: ProcessCpu {
                percent: 0.5,
                time_usec: None,
            },
            memory: ProcessMemory {
                rss: 4096,
                vms: 8192,
            },
            threads: 3,
            fds: 10,
            io: None,
        },
        cgroup: None,
        restarts: None,
        init_pid: None,
    }
}

#[test]
fn metrics_agent_reply_has_the_original_keys() {
    let r = MetricsAgentReply {
        success: true,
        metrics: worker(),
    };
    assert_eq!(
        sent(&r),
        json!({"success": true, "metrics": {
            "agent_id": 7, "name": "w", "pid": 1234, "status": "RUNNING", "uptime_ms": 1500,
            "process": {"pid": 1234, "cpu": {"percent": 0.5}, "memory": {"rss": 4096, "vms": 8192},
                        "threads": 3, "fds": 10}
        }})
    );
    // pid 1234 is zigzag 2468 = varint a4 13; uptime 1500 = dc 0b; 0.5 = 0x3fe0..;
    // time_usec None; rss 4096 = 80 20, vms 8192 = 80 40; io None; cgroup, restarts and
    // init_pid None.
    assert_eq!(
        encode(Codec::Postcard, &r).unwrap(),
        hex("01  07  01 77  a4 13  07 52 55 4e 4e 49 4e 47  dc 0b
             a4 13  00 00 00 00 00 00 e0 3f 00  80 20  80 40  03  0a 00
             00 00 00")
    );
    // Our extensions, when present.
    let ours = MetricsAgentReply {
        success: true,
        metrics: AgentMetrics {
            restarts: Some(2),
            init_pid: Some(1200),
            process: ProcessMetrics {
                cpu: ProcessCpu {
                    percent: 0.5,
                    time_usec: Some(250),
                },
                io: Some(IoBytes {
                    read_bytes: 1,
                    write_bytes: 2,
                }),
                ..worker().process
            },
            ..worker()
        },
    };
    let j = sent(&ours);
    assert_eq!(
        (
            &j["metrics"]["restarts"],
            &j["metrics"]["init_pid"],
            &j["metrics"]["process"]["cpu"],
            &j["metrics"]["process"]["io"]
        ),
        (
            &json!(2),
            &json!(1200),
            &json!({"percent": 0.5, "time_usec": 250}),
            &json!({"read_bytes": 1, "write_bytes": 2})
        )
    );
    let with_cgroup = MetricsAgentReply {
        success: true,
        metrics: AgentMetrics {
            cgroup: Some(CgroupMetrics::default()),
            ..worker()
        },
    };
    assert_eq!(
        sent(&with_cgroup)["metrics"]["cgroup"],
        json!({"cpu": {"usage_usec": 0, "user_usec": 0, "system_usec": 0},
               "memory": {"current": 0}, "pids": {"current": 0}})
    );
    // The original's shape, a lower-case status and an integer percentage.
    let back: MetricsAgentReply = read(
        r#"{"success": true, "metrics": {"agent_id": 2, "name": "a", "pid": 77,
            "status": "running", "uptime_ms": 10,
            "process": {"pid": 77, "cpu": {"percent": 1}, "memory": {"rss": 1, "vms": 2},
                        "threads": 1, "fds": 4},
            "cgroup": {"cpu": {"usage_usec": 5, "user_usec": 3, "system_usec": 2},
                       "memory": {"current": 100, "max": 200}, "pids": {"current": 1, "max": 64}}}}"#,
    );
    assert_eq!(back.metrics.status, "running");
    assert_eq!(back.metrics.process.cpu.percent, 1.0);
    let cg = back.metrics.cgroup.expect("cgroup");
    assert_eq!((cg.memory.max, cg.pids.max), (Some(200), Some(64)));
}

// ---------------------------------------------------------------- METRICS_ALL_AGENTS

#[test]
fn metrics_all_agents_golden() {
    golden(&MetricsAllAgentsRequest {}, "{}", "");
    let _: MetricsAllAgentsRequest = parse("");
}

#[test]
fn metrics_all_agents_reply_has_the_original_keys() {
    let r = MetricsAllAgentsReply {
        success: true,
        agents: Vec::new(),
        count: 0,
    };
    assert_eq!(sent(&r), json!({"success": true, "agents": [], "count": 0}));
    assert_eq!(encode(Codec::Postcard, &r).unwrap(), hex("01 00 00"));
    let r = MetricsAllAgentsReply {
        success: true,
        agents: vec![worker(), worker()],
        count: 2,
    };
    let j = sent(&r);
    assert_eq!(j["count"], json!(2));
    assert_eq!(j["agents"][1]["name"], json!("w"));
    assert!(j["agents"][0].get("cgroup").is_none());
    let back: MetricsAllAgentsReply = read(
        r#"{"success": true, "count": 1, "agents": [{"agent_id": 2, "name": "a", "pid": 77,
            "status": "RUNNING", "uptime_ms": 10,
            "process": {"pid": 77, "cpu": {"percent": 0.0}, "memory": {"rss": 1, "vms": 2},
                        "threads": 1, "fds": 4}}]}"#,
    );
    assert_eq!(back.count, 1);
    assert_eq!(back.agents[0].cgroup, None);
}

// ---------------------------------------------------------------- METRICS_CGROUP

#[test]
fn metrics_cgroup_golden() {
    golden(&MetricsCgroupRequest { cgroup_path: None }, "{}", "00");
    golden(
        &MetricsCgroupRequest {
            cgroup_path: Some("clove/a-7".into()),
        },
        r#"{"cgroup_path":"clove/a-7"}"#,
        "01 09 63 6c 6f 76 65 2f 61 2d 37",
    );
}

#[test]
fn metrics_cgroup_as_the_original_sdk_sends_it() {
    let r: MetricsCgroupRequest = parse("{}");
    assert_eq!(r.cgroup_path, None);
    let r: MetricsCgroupRequest = parse(r#"{"cgroup_path": null}"#);
    assert_eq!(r.cgroup_path, None);
    let r: MetricsCgroupRequest = parse(r#"{"cgroup_path": "/sys/fs/cgroup/clove"}"#);
    assert_eq!(r.cgroup_path.as_deref(), Some("/sys/fs/cgroup/clove"));
}

#[test]
fn metrics_cgroup_rejections_name_the_field() {
    let e = reject::<MetricsCgroupRequest>(r#"{"cgroup_path": ["a"]}"#);
    assert!(
        e.starts_with("cgroup_path: invalid type: sequence, expected a string"),
        "{e}"
    );
}

#[test]
fn metrics_cgroup_reply_has_the_original_keys() {
    // Unlimited memory and pids, no throttling numbers, no extensions.
    let r = MetricsCgroupReply {
        success: true,
        metrics: CgroupMetrics {
            cpu: CgroupCpu {
                usage_usec: 1000,
                user_usec: 600,
                system_usec: 400,
                throttled_usec: None,
                nr_throttled: None,
                percent: None,
                nr_periods: None,
            },
            memory: CgroupMemory {
                current: 4096,
                max: None,
                peak: None,
                swap: None,
                swap_max: None,
                oom_kills: None,
            },
            pids: CgroupPids {
                current: 2,
                max: None,
            },
            version: None,
            path: None,
            io: None,
        },
    };
    assert_eq!(
        sent(&r),
        json!({"success": true, "metrics": {
            "cpu": {"usage_usec": 1000, "user_usec": 600, "system_usec": 400},
            "memory": {"current": 4096},
            "pids": {"current": 2}
        }})
    );
    // 1000 = e8 07, 600 = d8 04, 400 = 90 03, four None; 4096 = 80 20, five None; 2, None;
    // version, path and io None.
    assert_eq!(
        encode(Codec::Postcard, &r).unwrap(),
        hex("01  e8 07  d8 04  90 03  00 00 00 00  80 20  00 00 00 00 00  02 00  00 00 00")
    );
    let full = MetricsCgroupReply {
        success: true,
        metrics: CgroupMetrics {
            cpu: CgroupCpu {
                throttled_usec: Some(50),
                nr_throttled: Some(3),
                percent: Some(12.5),
                nr_periods: Some(9),
                ..r.metrics.cpu.clone()
            },
            memory: CgroupMemory {
                current: 4096,
                max: Some(1 << 20),
                peak: Some(8192),
                swap: Some(0),
                swap_max: Some(2 << 20),
                oom_kills: Some(1),
            },
            pids: CgroupPids {
                current: 2,
                max: Some(64),
            },
            version: Some("v2".into()),
            path: Some("/sys/fs/cgroup/clove/a-7".into()),
            io: Some(IoBytes {
                read_bytes: 5,
                write_bytes: 6,
            }),
        },
    };
    assert_eq!(
        sent(&full),
        json!({"success": true, "metrics": {
            "cpu": {"usage_usec": 1000, "user_usec": 600, "system_usec": 400,
                    "throttled_usec": 50, "nr_throttled": 3, "percent": 12.5, "nr_periods": 9},
            "memory": {"current": 4096, "max": 1048576, "peak": 8192, "swap": 0,
                       "swap_max": 2097152, "oom_kills": 1},
            "pids": {"current": 2, "max": 64},
            "version": "v2", "path": "/sys/fs/cgroup/clove/a-7",
            "io": {"read_bytes": 5, "write_bytes": 6}
        }})
    );
    // The original's shape: `null` for an unlimited max.
    let back: MetricsCgroupReply = read(
        r#"{"success": true, "metrics": {
            "cpu": {"usage_usec": 1, "user_usec": 1, "system_usec": 0},
            "memory": {"current": 10, "max": null}, "pids": {"current": 1, "max": 64}}}"#,
    );
    assert_eq!(back.metrics.memory.max, None);
    assert_eq!(back.metrics.pids.max, Some(64));
    assert_eq!(back.metrics.version, None);
}
