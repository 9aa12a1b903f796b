//! `herald-chaos --quick` end to end (issue #18): every fault scenario in its short form
//! against the debug `herald` binary. It asserts only the delivery invariants (nothing
//! acknowledged lost, no event number reused, no first delivery out of order) and that each
//! scenario ran or was skipped with a reason; other expectations (status codes, refusing a
//! damaged store) are tracked in the tool's table and RELIABILITY.md, not here. Built only
//! with `--features load`; it runs alone (`.config/nextest.toml`), since it loads both cores.

use std::process::Command;

use serde_json::Value;

#[test]
fn herald_chaos_quick_mode_loses_reuses_and_reorders_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("chaos.json");
    let out = Command::new(env!("CARGO_BIN_EXE_herald-chaos"))
        .args(["--quick", "--herald", env!("CARGO_BIN_EXE_herald"), "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap())
        .unwrap_or_else(|e| panic!("no JSON report ({e}); status {}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status));
    let scenarios = report["scenarios"].as_array().unwrap();
    let names: Vec<&str> = scenarios.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["crash-loop", "disk-full", "long-outage", "hostile-receivers", "damaged-dirs", "cluster-crash"], "{stdout}");
    for s in scenarios {
        let name = s["name"].as_str().unwrap();
        match s["status"].as_str().unwrap() {
            "ran" => {}
            "skipped" => assert!(s["reason"].as_str().is_some_and(|r| !r.is_empty()), "{name} skipped without a reason"),
            other => panic!("{name} {other}: {}\n{stdout}\nstderr:\n{stderr}", s["reason"]),
        }
        for counter in ["lost", "reused", "out_of_order"] {
            // null: the scenario counts nothing of the kind.
            let n = s[counter].as_u64().unwrap_or(0);
            assert_eq!(n, 0, "{name}: {n} {counter}\n{stdout}");
        }
    }
    assert!(out.status.success(), "herald-chaos --quick failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    assert!(stdout.contains("| crash-loop |"), "the table is printed:\n{stdout}");
}
