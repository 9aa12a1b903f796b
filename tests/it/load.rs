//! `herald-load --quick` end to end (issue #9): the load tool's own ceilings, then every
//! scenario against the debug `herald` binary, cluster rows included (issue #22: 1 and 3 nodes
//! on real `nats-server`s, R1 and R3), `lane` (issue #23: one lane draining alone and the
//! delivery ceiling), `scale` (issue #23) with 2,000 Tasks and the storage rows (issue #23:
//! bytes per version). It checks only that each scenario delivered events (S5: matched them;
//! scale: its searches answered, which the tool checks); speed belongs in BENCHMARKS.md, not
//! in a test. Without `nats-server` the
//! cluster rows must say they were skipped (and under `CI=true` the test fails, as the cluster
//! tests do). Built only with
//! `--features load` (CI runs the tests with it); it runs alone (`.config/nextest.toml`), since
//! it loads both cores.

use std::process::Command;

use serde_json::Value;

use crate::support::nats::NatsCluster;

#[test]
fn herald_load_quick_mode_delivers_in_every_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("load.json");
    let out = Command::new(env!("CARGO_BIN_EXE_herald-load"))
        .args(["--quick", "--herald", env!("CARGO_BIN_EXE_herald"), "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "herald-load --quick failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    let scenarios: Vec<&str> = rows.iter().map(|r| r["scenario"].as_str().unwrap()).collect();
    for expected in ["ceiling-http", "ceiling-durable", "S1", "S2", "S3", "S4", "S5", "S6"] {
        assert!(scenarios.contains(&expected), "no {expected} row in {scenarios:?}\n{stdout}");
    }
    for row in rows.iter().filter(|r| r["scenario"].as_str().is_some_and(|s| s.starts_with('S') && s != "S5")) {
        assert!(row["notifications_total"].as_u64().unwrap() > 0, "nothing delivered: {row}");
    }
    assert!(stdout.contains("| S6 |"), "the table is printed:\n{stdout}");
    // lane (issue #23): one lane drained its backlog in order, beside the delivery ceiling.
    let lane = rows.iter().find(|r| r["scenario"] == "lane").unwrap_or_else(|| panic!("no lane row in {scenarios:?}\n{stdout}"));
    assert!(lane["notifications_total"].as_u64().unwrap() > 1, "the lane delivered nothing: {lane}");
    assert_eq!(lane["out_of_order"].as_u64(), Some(0), "{lane}");
    assert_eq!(lane["undelivered"].as_u64(), Some(0), "{lane}");
    let ceiling =
        rows.iter().find(|r| r["scenario"] == "ceiling-delivery").unwrap_or_else(|| panic!("no delivery ceiling in {scenarios:?}"));
    assert!(ceiling["notifications_per_s"].as_f64().unwrap() > 0.0, "{ceiling}");
    // scale (issue #23): loaded, searched (every answer checked by the tool) and restarted.
    let scale = rows.iter().find(|r| r["scenario"] == "scale").unwrap_or_else(|| panic!("no scale row in {scenarios:?}\n{stdout}"));
    assert!(scale["matches"].as_u64().unwrap() > 0, "Task?_summary=count counted nothing: {scale}");
    assert!(scale["details"]["ready_after_kill9_s"].as_f64().is_some(), "{scale}");
    assert!(stdout.contains("Scale:"), "the scale table is printed:\n{stdout}");
    for expected in ["storage-small", "storage-large"] {
        let row = rows.iter().find(|r| r["scenario"] == expected).unwrap_or_else(|| panic!("no {expected} row in {scenarios:?}\n{stdout}"));
        assert!(row["details"]["file_bytes_per_version"].as_f64().unwrap() > 0.0, "nothing measured: {row}");
        assert!(row["details"]["history_bytes_per_version"].as_f64().unwrap() > 0.0, "no breakdown: {row}");
        assert!(row["notifications_total"].as_u64().unwrap() > 0, "nothing delivered: {row}");
    }
    assert!(stdout.contains("Storage: bytes per stored version"), "the storage table is printed:\n{stdout}");
    if NatsCluster::available() {
        for expected in ["S1-1n-R1", "S1-3n-R1", "S1-3n-R3"] {
            let row =
                rows.iter().find(|r| r["scenario"] == expected).unwrap_or_else(|| panic!("no {expected} row in {scenarios:?}\n{stdout}"));
            assert!(row["notifications_total"].as_u64().unwrap() > 0, "nothing delivered: {row}");
            assert!(row["cluster"]["writes_vs_sled"].as_f64().is_some(), "no ratio to S1 on sled: {row}");
        }
        assert!(stdout.contains("Cluster mode:"), "the cluster table is printed:\n{stdout}");
    } else {
        assert!(scenarios.contains(&"cluster"), "the skipped cluster rows are noted: {scenarios:?}");
    }
}
