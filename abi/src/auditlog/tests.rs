#![allow(clippy::unwrap_used)]

use super::*;
use serde_json::json;

/// `n` sealed entries from id `first` on, linked to `prev`: (lines, last hash).
fn chain(first: u64, n: u64, prev: &str) -> (Vec<String>, String) {
    let mut prev = prev.to_owned();
    let mut lines = Vec::new();
    for id in first..first + n {
        let mut e = LogEntry {
            id,
            timestamp: iso8601_ms(1_700_000_000_000 + id as i64),
            category: AuditCategory::AgentLifecycle,
            event_type: "AGENT_SPAWNED".into(),
            agent_id: 7,
            agent_name: Some("w\u{e9}".into()),
            owner_uid: Some(1000),
            success: true,
            details: json!({"pid": 100 + id, "z": [1, {"b": 2, "a": 1.5}], "a": "x\"y"}),
            decided_by: "operator:1000".into(),
            prev: prev.clone(),
            hash: String::new(),
        };
        lines.push(e.seal());
        prev = e.hash;
    }
    (lines, prev)
}

fn anchor(first_id: u64, first_prev: &str, last_id: u64, last_hash: &str, files: u32) -> Vec<u8> {
    serde_json::to_vec(&Anchor {
        last_id,
        last_hash: last_hash.into(),
        entries: last_id + 1 - first_id,
        files,
        first_id,
        first_prev: first_prev.into(),
        updated: "2025-01-01T00:00:00.000Z".into(),
    })
    .unwrap()
}

fn text(lines: &[String]) -> Vec<u8> {
    lines
        .iter()
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect()
}

fn kinds(r: &Report) -> Vec<FindingKind> {
    r.findings.iter().map(|f| f.kind).collect()
}

/// Ten entries in one file with their anchor.
fn ten() -> (Vec<String>, Vec<u8>) {
    let (lines, last) = chain(1, 10, GENESIS);
    (lines, anchor(1, GENESIS, 10, &last, 1))
}

#[test]
fn the_body_is_canonical_and_the_line_is_the_body_plus_its_hash() {
    let (lines, _) = chain(1, 1, GENESIS);
    let line = &lines[0];
    let c = check_line(line.as_bytes()).unwrap();
    assert!(c.hash_ok);
    let body = c.entry.body();
    // Members sorted by key at every depth, no whitespace.
    assert!(body.starts_with(r#"{"agent_id":7,"agent_name":"wé","category":"AGENT_LIFECYCLE","decided_by":"operator:1000","details":{"a":"x\"y","pid":101,"z":[1,{"a":1.5,"b":2}]},"event_type":"AGENT_SPAWNED","id":1,"owner_uid":1000,"prev":"0000"#), "{body}");
    assert_eq!(c.entry.hash, sha256_hex(body.as_bytes()));
    assert_eq!(
        line,
        &format!(
            "{},\"hash\":\"{}\"}}",
            &body[..body.len() - 1],
            c.entry.hash
        )
    );
}

#[test]
fn timestamps_are_iso8601_utc_with_milliseconds() {
    assert_eq!(iso8601_ms(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(iso8601_ms(1_738_324_800_123), "2025-01-31T12:00:00.123Z");
    assert_eq!(iso8601_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    assert_eq!(iso8601_ms(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
}

#[test]
fn file_names_number_and_order() {
    assert_eq!(file_name(None), "audit.log");
    assert_eq!(file_name(Some(3)), "audit.log.3");
    assert_eq!(file_number("audit.log"), Some(None));
    assert_eq!(file_number("audit.log.12"), Some(Some(12)));
    for other in [
        "audit.log.",
        "audit.log.0",
        "audit.log.01",
        "audit.logx",
        "audit.head",
        "audit.log.1.tmp",
    ] {
        assert_eq!(file_number(other), None, "{other}");
    }
    assert_eq!(
        log_files_oldest_first([
            "audit.log",
            "audit.log.2",
            "audit.head",
            "audit.log.10",
            "audit.log.1"
        ]),
        vec!["audit.log.1", "audit.log.2", "audit.log.10", "audit.log"]
    );
}

#[test]
fn an_intact_log_verifies() {
    let (lines, head) = ten();
    let r = verify(Some(&head), &[("audit.log", &text(&lines))]);
    assert!(r.intact, "{r:#?}");
    assert_eq!(
        (r.entries, r.first_id, r.last_id, r.unanchored),
        (10, Some(1), Some(10), 0)
    );
    assert!(r.notes.is_empty(), "{r:#?}");
}

#[test]
fn an_empty_log_without_anchor_verifies() {
    let r = verify(None, &[]);
    assert!(r.intact, "{r:#?}");
    let r = verify(
        Some(&serde_json::to_vec(&Anchor::empty()).unwrap()),
        &[("audit.log", b"")],
    );
    assert!(r.intact, "{r:#?}");
}

#[test]
fn an_edited_byte_is_found_at_its_line() {
    let (mut lines, head) = ten();
    lines[3] = lines[3].replace("\"pid\":104", "\"pid\":105");
    let r = verify(Some(&head), &[("audit.log", &text(&lines))]);
    assert_eq!(kinds(&r), vec![FindingKind::Edited], "{r:#?}");
    let f = &r.findings[0];
    assert_eq!(
        (f.file.as_deref(), f.line, f.id),
        (Some("audit.log"), Some(4), Some(4))
    );
    assert!(f.message.contains("edited"), "{}", f.message);
}

#[test]
fn an_edit_with_a_recomputed_hash_breaks_the_next_link() {
    let (mut lines, head) = ten();
    let mut e = check_line(lines[3].as_bytes()).unwrap().entry;
    e.success = false;
    lines[3] = e.seal();
    let r = verify(Some(&head), &[("audit.log", &text(&lines))]);
    assert_eq!(kinds(&r), vec![FindingKind::ChainBroken], "{r:#?}");
    assert_eq!((r.findings[0].line, r.findings[0].id), (Some(5), Some(5)));
}

#[test]
fn a_deleted_line_is_missing() {
    let (mut lines, head) = ten();
    lines.remove(4);
    let r = verify(Some(&head), &[("audit.log", &text(&lines))]);
    assert_eq!(kinds(&r), vec![FindingKind::Missing], "{r:#?}");
    assert!(
        r.findings[0].message.starts_with("entry 5 missing"),
        "{r:#?}"
    );
}

#[test]
fn swapped_lines_are_out_of_order() {
    let (mut lines, head) = ten();
    lines.swap(4, 5);
    let r = verify(Some(&head), &[("audit.log", &text(&lines))]);
    assert!(!r.intact);
    assert!(kinds(&r).contains(&FindingKind::Reordered), "{r:#?}");
    assert!(
        r.findings
            .iter()
            .all(|f| f.line.is_some_and(|l| (5..=7).contains(&l))),
        "{r:#?}"
    );
}

#[test]
fn a_truncated_file_is_cut_off_at_the_end() {
    let (lines, head) = ten();
    let r = verify(Some(&head), &[("audit.log", &text(&lines[..7]))]);
    assert_eq!(kinds(&r), vec![FindingKind::Truncated], "{r:#?}");
    assert!(
        r.findings[0].message.contains("entries 8..10 cut off"),
        "{r:#?}"
    );
    // Emptied entirely.
    let r = verify(Some(&head), &[("audit.log", b"")]);
    assert_eq!(kinds(&r), vec![FindingKind::Truncated], "{r:#?}");
}

#[test]
fn a_last_line_cut_mid_way_is_truncation() {
    let (lines, head) = ten();
    let mut bytes = text(&lines);
    bytes.truncate(bytes.len() - 40);
    let r = verify(Some(&head), &[("audit.log", &bytes)]);
    assert!(kinds(&r).contains(&FindingKind::Truncated), "{r:#?}");
    assert!(r.findings.iter().any(|f| f.line == Some(10)), "{r:#?}");
}

#[test]
fn entries_past_the_anchor_and_a_torn_tail_after_them_are_no_tampering() {
    let (lines, _) = chain(1, 10, GENESIS);
    let eight = check_line(lines[7].as_bytes()).unwrap().entry.hash;
    let head = anchor(1, GENESIS, 8, &eight, 1);
    let mut bytes = text(&lines);
    bytes.extend_from_slice(&lines[0].as_bytes()[..30]);
    let r = verify(Some(&head), &[("audit.log", &bytes)]);
    assert!(r.intact, "{r:#?}");
    assert_eq!(r.unanchored, 2);
    assert_eq!(r.notes.len(), 2, "{r:#?}");
}

#[test]
fn a_rotated_log_verifies_across_files_and_from_its_first_kept_entry() {
    let (a, ha) = chain(1, 4, GENESIS);
    let (b, hb) = chain(5, 4, &ha);
    let (c, hc) = chain(9, 3, &hb);
    let head = anchor(1, GENESIS, 11, &hc, 3);
    let files = [
        ("audit.log.1", text(&a)),
        ("audit.log.5", text(&b)),
        ("audit.log", text(&c)),
    ];
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    let r = verify(Some(&head), &refs);
    assert!(r.intact, "{r:#?}");
    assert_eq!(r.entries, 11);
    // The oldest file rotated away for good: the anchor says where the kept chain begins.
    let head = anchor(5, &ha, 11, &hc, 2);
    let r = verify(Some(&head), &refs[1..]);
    assert!(r.intact, "{r:#?}");
    assert_eq!(r.first_id, Some(5));
}

#[test]
fn a_deleted_rotated_file_is_found() {
    let (a, ha) = chain(1, 4, GENESIS);
    let (b, hb) = chain(5, 4, &ha);
    let (c, hc) = chain(9, 3, &hb);
    let head = anchor(1, GENESIS, 11, &hc, 3);
    // The oldest one.
    let r = verify(
        Some(&head),
        &[("audit.log.5", &text(&b)), ("audit.log", &text(&c))],
    );
    assert_eq!(kinds(&r), vec![FindingKind::StartMissing], "{r:#?}");
    assert!(
        r.findings[0].message.contains("entries 1..4 missing"),
        "{r:#?}"
    );
    // One in the middle.
    let r = verify(
        Some(&head),
        &[("audit.log.1", &text(&a)), ("audit.log", &text(&c))],
    );
    assert_eq!(kinds(&r), vec![FindingKind::Missing], "{r:#?}");
    assert_eq!(r.findings[0].file.as_deref(), Some("audit.log"));
    // The newest one.
    let r = verify(
        Some(&head),
        &[("audit.log.1", &text(&a)), ("audit.log.5", &text(&b))],
    );
    assert_eq!(kinds(&r), vec![FindingKind::Truncated], "{r:#?}");
}

#[test]
fn a_tampered_anchor_is_found() {
    let (lines, last) = chain(1, 10, GENESIS);
    let log = text(&lines);
    let files: [(&str, &[u8]); 1] = [("audit.log", &log)];
    // Another hash for the last entry.
    let other = sha256_hex(b"x");
    let r = verify(Some(&anchor(1, GENESIS, 10, &other, 1)), &files);
    assert_eq!(kinds(&r), vec![FindingKind::AnchorMismatch], "{r:#?}");
    // A shorter chain claimed: the last entry's hash is that of id 10, not of id 9.
    let r = verify(Some(&anchor(1, GENESIS, 9, &last, 1)), &files);
    assert_eq!(kinds(&r), vec![FindingKind::AnchorMismatch], "{r:#?}");
    // Garbage.
    let r = verify(Some(b"{\"last_id\": "), &files);
    assert_eq!(kinds(&r), vec![FindingKind::AnchorInvalid], "{r:#?}");
    // Gone.
    let r = verify(None, &files);
    assert_eq!(kinds(&r), vec![FindingKind::AnchorMissing], "{r:#?}");
    // Another start.
    let r = verify(Some(&anchor(1, &other, 10, &last, 1)), &files);
    assert_eq!(kinds(&r), vec![FindingKind::ChainBroken], "{r:#?}");
}

#[test]
fn garbage_and_duplicates_are_found() {
    let (mut lines, head) = ten();
    lines.insert(2, "hello".into());
    let r = verify(Some(&head), &[("audit.log", &text(&lines))]);
    assert_eq!(kinds(&r), vec![FindingKind::Malformed], "{r:#?}");
    assert_eq!(r.findings[0].line, Some(3));
    let (mut lines, head) = ten();
    let copy = lines[4].clone();
    lines.insert(5, copy);
    let r = verify(Some(&head), &[("audit.log", &text(&lines))]);
    assert!(kinds(&r).contains(&FindingKind::Reordered), "{r:#?}");
}

#[test]
fn wire_entries_carry_hash_and_decider() {
    let (lines, _) = chain(1, 1, GENESIS);
    let e = check_line(lines[0].as_bytes()).unwrap().entry;
    let w = e.to_wire();
    assert_eq!(w.hash.as_deref(), Some(e.hash.as_str()));
    assert_eq!(w.decided_by.as_deref(), Some("operator:1000"));
    assert_eq!(w.agent_name.as_deref(), Some("wé"));
}
