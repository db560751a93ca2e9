//! The event log of a real incident: the daemon (block mode) writes a hash-chained log
//! while a hook's lineage reads credentials and is denied the network; then `pthwatch log
//! verify` accepts it, `log query` finds the processes that ran the hook, `log show` draws
//! the incident, and an edited copy is refused with the record named.
use std::time::Duration;

use integration_tests::{
    Daemon, Sandbox, TcpSink, can_run,
    payload::{exfil_alert, exfiltrate, spawning_pth_line, wait_marker},
    pthwatch_bin, run_bounded,
};
use serde_json::Value;

fn pthwatch(args: &[&str]) -> (i32, String) {
    let mut cmd = std::process::Command::new(pthwatch_bin());
    cmd.args(args);
    run_bounded(&mut cmd, Duration::from_secs(60))
}

fn records(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("read event log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a record is JSON"))
        .collect()
}

#[test]
fn an_incident_is_in_the_event_log_verifiable_queryable_and_drawn() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("eventlog");
    let sink = TcpSink::start();
    let child = exfiltrate(sink.port);
    let pth = sb.pth("evil_init.pth", &spawning_pth_line(&child));
    let log = sb.root.join("events.jsonl");
    let log_arg = log.to_string_lossy().into_owned();
    let daemon = Daemon::start("block", &["--event-log", &log_arg]);
    let (code, out) = sb.python(&["-c", "pass"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        wait_marker(&sb, Duration::from_secs(20)).as_deref(),
        Some("error 1"),
        "the upload is denied"
    );
    let alert = exfil_alert(&daemon);
    daemon.stop();
    let alert = alert.expect("an exfiltration alert");
    let id = alert["id"].as_str().expect("alert id").to_owned();
    assert_eq!(sink.bytes(), 0);

    // The log holds the alert, the hook's run, and what the lineage did.
    let recs = records(&log);
    let kinds: Vec<&str> = recs.iter().filter_map(|r| r["kind"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"start"), "{kinds:?}");
    assert_eq!(
        kinds.last(),
        Some(&"stop"),
        "a clean stop is recorded: {kinds:?}"
    );
    let pth_path = pth.to_string_lossy().into_owned();
    assert!(
        recs.iter()
            .any(|r| r["kind"] == "alert" && r["data"]["id"] == id.as_str()),
        "the alert is logged"
    );
    let hook_run = recs
        .iter()
        .find(|r| r["kind"] == "hook" && r["data"]["path"] == pth_path.as_str())
        .unwrap_or_else(|| panic!("the hook's run is logged: {kinds:?}"));
    let interpreter = hook_run["data"]["pid"].as_u64().expect("pid");
    let lineage = alert["lineage_id"].as_u64().expect("lineage id");
    let of_lineage = |r: &&Value| r["data"]["lineage_id"].as_u64() == Some(lineage);
    assert!(
        recs.iter()
            .filter(of_lineage)
            .any(|r| r["kind"] == "process"
                && r["data"]["event"] == "read"
                && r["data"]["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with(".aws/credentials"))),
        "the credential read is logged"
    );
    assert!(
        recs.iter()
            .filter(of_lineage)
            .any(|r| r["kind"] == "decision"
                && r["data"]["action"] == "blocked"
                && r["data"]["destination"]["port"].as_u64() == Some(u64::from(sink.port))),
        "the denied connect is logged with its destination"
    );
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(
            r["seq"].as_u64(),
            Some(i as u64),
            "seq counts from 0 without gaps"
        );
    }

    // verify: intact.
    let (code, out) = pthwatch(&["log", "verify", "--file", &log_arg]);
    assert_eq!(code, 0, "an intact log verifies: {out}");

    // query --hook: the interpreter that ran it, and the alert.
    let (code, out) = pthwatch(&[
        "log", "query", "--file", &log_arg, "--hook", &pth_path, "--json",
    ]);
    assert_eq!(code, 0, "{out}");
    let hits: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        hits.iter()
            .any(|r| r["kind"] == "hook" && r["data"]["pid"].as_u64() == Some(interpreter)),
        "query --hook names the process that ran it: {out}"
    );
    assert!(
        hits.iter().any(|r| r["kind"] == "alert"),
        "and the alert about it: {out}"
    );

    // show: the incident's tree names the hook, the credential and the denial.
    let (code, out) = pthwatch(&["log", "show", &id, "--file", &log_arg]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&pth_path), "the hook is named: {out}");
    assert!(
        out.contains(".aws/credentials"),
        "the credential is named: {out}"
    );
    assert!(out.contains("blocked"), "the denial is named: {out}");

    // An edited record is found, and named.
    let text = std::fs::read_to_string(&log).expect("read");
    let edited = text.replacen(&format!("{}", sink.port), "9", 1);
    assert_ne!(edited, text);
    let copy = sb.root.join("edited.jsonl");
    std::fs::write(&copy, edited).expect("write copy");
    let _ = std::fs::copy(
        sb.root.join("events.jsonl.head"),
        sb.root.join("edited.jsonl.head"),
    );
    let (code, out) = pthwatch(&["log", "verify", "--file", &copy.to_string_lossy()]);
    assert_ne!(code, 0, "an edited log must fail verification: {out}");
    assert!(out.contains("seq"), "the failing record is located: {out}");
}
