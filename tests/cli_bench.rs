//! `capdec bench` runs on the fixture and prints well-formed reports. Timings are printed, never asserted on:
//! speed is judged by BENCHMARKS.md's side-by-side runs, not by tests on a shared machine.

mod common;

use serde_json::Value;

const STAGES: [&str; 9] = [
    "preprocess",
    "encode",
    "map",
    "decoder prefix step",
    "decoder token step",
    "decoder beam step",
    "caption greedy",
    "caption beam",
    "decode beam",
];

#[test]
fn json_report_covers_every_stage_at_every_thread_count() {
    let run = common::capdec(&[
        "bench",
        "--runs",
        "2",
        "--warmup",
        "1",
        "--tokens",
        "3",
        "--threads",
        "1,2",
        "--json",
    ]);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    let report: Value = serde_json::from_str(run.stdout.trim()).expect("one JSON report");
    assert_eq!(report["model"], "fixture-tiny");
    assert_eq!(report["precision"], "int8");
    assert_eq!(report["engine"], "tract");
    assert_eq!(report["tokens"], 3);
    assert!(report["load_ms"].as_f64().is_some_and(|ms| ms > 0.0));
    assert!(report["peak_rss_mb"].as_f64().is_some_and(|mb| mb > 1.0));
    let threads = report["threads"].as_array().expect("per-thread reports");
    assert_eq!(threads.len(), 2);
    for (report, count) in threads.iter().zip([1, 2]) {
        assert_eq!(report["threads"], count);
        let stages = report["stages"].as_array().expect("stages");
        let names: Vec<&str> = stages.iter().filter_map(|s| s["stage"].as_str()).collect();
        assert_eq!(names, STAGES);
        for stage in stages {
            let median = stage["median_ms"].as_f64().expect("median");
            let p90 = stage["p90_ms"].as_f64().expect("p90");
            assert!(median > 0.0 && p90 >= median, "{stage}");
        }
        // Samples: one a run, or one a token for the decoder's steps.
        let samples: Vec<u64> = stages
            .iter()
            .filter_map(|s| s["samples"].as_u64())
            .collect();
        assert_eq!(samples, [2, 2, 2, 2, 6, 6, 2, 2, 2], "{stages:?}");
        // The int8 work on our kernels: none to preprocess; where a kernel runs on this CPU, the encoder's
        // products, and a beam step's five rows five times a token step's multiply-adds over the same weights.
        let work = |name: &str, key: &str| {
            let stage = stages.iter().find(|s| s["stage"] == name).expect(name);
            stage[key].as_f64().expect(key)
        };
        assert_eq!(work("preprocess", "int8_multiply_adds"), 0.0);
        if work("encode", "int8_multiply_adds") > 0.0 {
            let token = work("decoder token step", "int8_multiply_adds");
            assert_eq!(work("decoder beam step", "int8_multiply_adds"), 5.0 * token);
            assert_eq!(
                work("decoder beam step", "int8_weights"),
                work("decoder token step", "int8_weights")
            );
        }
    }
}

#[test]
fn text_report_is_a_table_and_fp32_can_be_chosen() {
    let run = common::capdec(&[
        "bench",
        "--runs",
        "1",
        "--warmup",
        "0",
        "--tokens",
        "2",
        "--threads",
        "1",
        "--precision",
        "fp32",
    ]);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert!(
        run.stdout
            .starts_with("model fixture-tiny (fp32) on tract, load "),
        "{}",
        run.stdout
    );
    for stage in STAGES {
        let row = run
            .stdout
            .lines()
            .find(|l| l.starts_with(stage))
            .expect(stage);
        assert!(row.contains(" / "), "{row}");
    }
}

#[test]
fn bad_bench_options_are_usage_errors() {
    common::assert_usage_error(
        &common::capdec(&["bench", "--threads", "1,0"]),
        &[
            "invalid value '0' for '--threads <LIST>'",
            "positive whole number",
        ],
    );
    common::assert_usage_error(
        &common::capdec(&["bench", "--runs", "x"]),
        &["invalid value 'x' for '--runs <N>'"],
    );
    common::assert_usage_error(
        &common::capdec(&["bench", "a.png", "b.png"]),
        &["unexpected argument 'b.png'"],
    );
}

/// The networks on onnxruntime's own library (the toolkit's), under the same search: every stage, no int8 work
/// on our kernels, and no memory figure (tract's captioner is loaded beside it).
#[cfg(feature = "onnxruntime")]
#[test]
fn onnxruntime_runs_every_stage() {
    let library = std::process::Command::new(common::repo().join("scripts/onnxruntime-library"))
        .output()
        .expect("scripts/onnxruntime-library runs");
    assert!(library.status.success(), "{library:?}");
    let library = String::from_utf8(library.stdout).expect("a path");
    let run = common::capdec(&[
        "bench",
        "--runs",
        "1",
        "--warmup",
        "0",
        "--tokens",
        "2",
        "--threads",
        "1,2",
        "--json",
        "--onnxruntime",
        library.trim(),
    ]);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    let report: Value = serde_json::from_str(run.stdout.trim()).expect("one JSON report");
    assert_eq!(report["engine"], "onnxruntime");
    assert!(report["peak_rss_mb"].is_null());
    for threads in report["threads"].as_array().expect("per-thread reports") {
        let stages = threads["stages"].as_array().expect("stages");
        let names: Vec<&str> = stages.iter().filter_map(|s| s["stage"].as_str()).collect();
        assert_eq!(names, STAGES);
        assert!(
            stages.iter().all(|s| s["int8_multiply_adds"] == 0.0),
            "{stages:?}"
        );
    }
    let missing = common::capdec(&["bench", "--onnxruntime", "/nonexistent/libonnxruntime.so.1"]);
    assert_eq!(missing.code, Some(1), "stdout: {}", missing.stdout);
    assert!(
        missing.stderr.contains("/nonexistent/libonnxruntime.so.1"),
        "{}",
        missing.stderr
    );
}

#[cfg(not(feature = "onnxruntime"))]
#[test]
fn onnxruntime_needs_its_feature() {
    let run = common::capdec(&["bench", "--onnxruntime", "libonnxruntime.so.1"]);
    assert_eq!(run.code, Some(1), "stdout: {}", run.stdout);
    assert!(
        run.stderr.contains("libonnxruntime.so.1") && run.stderr.contains("--features onnxruntime"),
        "{}",
        run.stderr
    );
}
