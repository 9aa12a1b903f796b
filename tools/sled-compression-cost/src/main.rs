//! Engine-only estimate of what sled's zstd page compression (level 1, Herald's level when `store.compression_level` turns it on) costs
//! on the write path: one `Batch` per stored version shaped like Herald's (a 470 B history
//! record, the current pointer, a 200 B event, two index inserts and one removal, the entry
//! list, a 317 B subscription state), a group flush every 10 commits, 4 versions per Task.
//! Prints the process's CPU time (utime + stime) and wall time per commit and the directory's
//! bytes per commit. Usage: `sled-compression-cost on|off COMMITS`.
use std::time::Instant;

fn cpu() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = s.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

fn main() {
    let compress: bool = std::env::args().nth(1).unwrap() == "on";
    let n: usize = std::env::args().nth(2).unwrap().parse().unwrap();
    let dir = std::env::temp_dir().join(format!("sledbench-{}-{}", compress, std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let db = sled::Config::new().path(&dir).use_compression(compress).compression_factor(1).cache_capacity(128 << 20).open().unwrap();
    let t = db.open_tree("herald").unwrap();
    let (c0, w0) = (cpu(), Instant::now());
    let tasks = n / 4;
    for v in 0..n {
        let task = (v * 7919) % tasks;
        let seq = v / tasks + 1;
        let mut b = sled::Batch::default();
        let res = format!(r#"{{"v":1,"resource_type":"Task","id":"lt{task}","seq":{seq},"version_id":"{seq}","last_updated":1765130000{v:03},"method":"PUT","deleted":false,"resource":{{"resourceType":"Task","id":"lt{task}","meta":{{"versionId":"{seq}","lastUpdated":"2026-12-07T19:00:00.{v:03}Z"}},"status":"accepted","intent":"order","code":{{"coding":[{{"system":"http://example.org/work","code":"draw-blood"}}]}},"focus":{{"reference":"ServiceRequest/sr-{task}"}},"owner":{{"reference":"Organization/storage"}}}}}}"#);
        b.insert(format!("hTask\0lt{task}\0{seq:08}").as_bytes(), res.as_bytes());
        b.insert(format!("rTask\0lt{task}").as_bytes(), format!(r#"{{"v":1,"seq":{seq},"version_id":"{seq}","deleted":false}}"#).as_bytes());
        b.insert(format!("e6b1c3a9e-0f3c-4c39-9d7a-2d4f0e6b8a11\0{v:08}").as_bytes(), format!(r#"{{"v":1,"number":{v},"timestamp":1765130000000,"topic":"http://example.org/herald-load/SubscriptionTopic/task-written","interaction":"update","focus_type":"Task","focus_id":"lt{task}","focus_seq":{seq},"inc":1}}"#).as_bytes());
        b.insert(format!("iTask\0status\0=accepted{seq}\0lt{task}").as_bytes(), &[][..]);
        b.insert(format!("iTask\0_lastUpdated\0b{v:016}\0lt{task}").as_bytes(), &[][..]);
        b.remove(format!("iTask\0status\0=accepted{}\0lt{task}", seq.saturating_sub(1)).as_bytes());
        b.insert(format!("xTask\0lt{task}").as_bytes(), vec![b'x'; 140]);
        b.insert(&b"s6b1c3a9e-0f3c-4c39-9d7a-2d4f0e6b8a11"[..], format!("{{\"state\":{v},{}}}", "\"f\":0,".repeat(50)).as_bytes());
        t.apply_batch(b).unwrap();
        if v % 10 == 9 { db.flush().unwrap(); }
    }
    db.flush().unwrap();
    let (c1, w1) = (cpu(), w0.elapsed().as_secs_f64());
    drop(t); drop(db);
    let size: u64 = std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum();
    println!("compression {compress}: {n} commits, {:.1} us CPU per commit, {:.1} us wall per commit, {} B per commit on disk", (c1 - c0) * 1e6 / n as f64, w1 * 1e6 / n as f64, size / n as u64);
    let _ = std::fs::remove_dir_all(&dir);
}
