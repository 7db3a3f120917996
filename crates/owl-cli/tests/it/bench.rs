//! `owl bench --json` on smollm2 (tiny sizes, to keep the suite fast).

#![allow(clippy::unwrap_used)]

use crate::support::{owl, owl_json};

#[test]
fn bench_json_and_table() {
    let out = owl_json(["bench", "smollm2", "-p", "16", "-n", "4", "-r", "2", "-t", "1", "--json"]);
    let results = out.as_array().unwrap();
    let tests: Vec<&str> = results.iter().map(|r| r["test"].as_str().unwrap()).collect();
    assert_eq!(tests, ["pp16", "tg4"]);
    for r in results {
        let tps = r["tokens_per_s"].as_f64().unwrap();
        assert!(tps.is_finite() && tps > 0.0, "{r}");
        assert!(r["stddev"].as_f64().unwrap() >= 0.0, "{r}");
        assert_eq!(r["threads"], 1);
        assert_eq!(r["samples_ns"].as_array().unwrap().len(), 2);
    }

    let run = owl(["bench", "smollm2", "-p", "8", "-n", "0", "-r", "1", "-t", "1"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", run.stdout);
    assert!(lines[0].contains("| model") && lines[0].contains("t/s"));
    assert!(lines[2].starts_with("| SmolLM2-135M-Instruct.Q4_1.gguf | 98.36 MB | 134.52 M | "), "{}", lines[2]);
    assert!(lines[2].contains(" | 1 | pp8 | "), "{}", lines[2]);
}

#[test]
fn bench_at_a_depth() {
    let out = owl_json(["bench", "smollm2", "-p", "8", "-n", "2", "-d", "0,40", "-r", "1", "-t", "1", "--json"]);
    let rows = out.as_array().unwrap();
    let tests: Vec<(&str, u64)> =
        rows.iter().map(|r| (r["test"].as_str().unwrap(), r["n_depth"].as_u64().unwrap())).collect();
    assert_eq!(tests, [("pp8", 0), ("tg2", 0), ("pp8 @ d40", 40), ("tg2 @ d40", 40)]);
    assert!(rows.iter().all(|r| r["tokens_per_s"].as_f64().is_some_and(|t| t.is_finite() && t > 0.0)));
}
