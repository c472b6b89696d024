//! The Rust caption metrics against the Python ones: tests/data/metric-goldens.json, written by
//! `capdec-toolkit metric-goldens` from `training/src/capdec_toolkit/reference/metrics.py` (itself checked against
//! pycocoevalcap, and the file against metrics.py, by the toolkit's tests).

mod common;

use capdec_edge::eval::metrics::score_captions;
use serde_json::Value;

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

/// Every number written after `"key": ` in the file, in order, parsed by `str::parse` (correctly rounded).
/// serde_json's default float parsing (without its `float_roundtrip` feature) can be one unit in the last place
/// off, which would hide an exact match behind a parsing error.
fn literals(text: &str, key: &str) -> Vec<f64> {
    let marker = format!("\"{key}\": ");
    text.match_indices(&marker)
        .map(|(at, _)| {
            let rest = &text[at + marker.len()..];
            let end = rest.find([',', '\n', '}']).unwrap_or(rest.len());
            rest[..end]
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("{key}: `{}`: {e}", &rest[..end]))
        })
        .collect()
}

/// Relative difference; two zeros are equal, a zero against anything else is 1.
fn relative(a: f64, b: f64) -> f64 {
    if a == b {
        0.0
    } else {
        (a - b).abs() / a.abs().max(b.abs())
    }
}

#[test]
fn rust_metrics_equal_python_goldens() {
    let path = common::repo().join("tests/data/metric-goldens.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let goldens: Value = serde_json::from_str(&text).expect("goldens are JSON");
    let cases = goldens["cases"].as_array().expect("cases");
    assert!(cases.len() >= 8, "only {} cases", cases.len());
    let metrics = ["bleu4", "rouge_l", "cider_d"];
    let stored: Vec<Vec<f64>> = metrics.iter().map(|m| literals(&text, m)).collect();
    let (mut worst, mut identical, mut total) = ((0.0, String::new()), 0, 0);
    for (index, case) in cases.iter().enumerate() {
        let name = case["name"].as_str().expect("name");
        let hypotheses = strings(&case["hypotheses"]);
        let references: Vec<Vec<String>> = case["references"]
            .as_array()
            .expect("references")
            .iter()
            .map(strings)
            .collect();
        let scores =
            score_captions(&hypotheses, &references).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(scores.captions, hypotheses.len(), "{name}");
        let ours = [scores.bleu4, scores.rouge_l, scores.cider_d];
        for ((metric, ours), stored) in metrics.iter().zip(ours).zip(&stored) {
            assert_eq!(stored.len(), cases.len(), "one {metric} per case");
            let python = stored[index];
            let parsed = case[metric].as_f64().expect("score");
            assert!(
                relative(parsed, python) < 1e-15,
                "{name} {metric}: {parsed:e} read as {python:e}"
            );
            let difference = relative(ours, python);
            assert!(
                difference <= 1e-9,
                "{name} {metric}: Rust {ours:e}, Python {python:e}"
            );
            total += 1;
            identical += usize::from(ours.to_bits() == python.to_bits());
            if difference >= worst.0 {
                worst = (difference, format!("{name} {metric}"));
            }
        }
    }
    println!(
        "{identical} of {total} scores bit-identical; largest relative difference {:e} ({})",
        worst.0, worst.1
    );
}
