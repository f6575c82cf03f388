//! The Grafana dashboard is valid JSON, queries only metrics and labels that Archon emits, and
//! shows every one of them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use archon_metrics::names;

fn exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::String(expr)) = map.get("expr") {
                out.push(expr.clone());
            }
            map.values().for_each(|v| exprs(v, out));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// Identifiers directly followed by `{`: the metric selectors of a PromQL expression.
fn selectors(expr: &str) -> Vec<String> {
    let mut found = Vec::new();
    let bytes = expr.as_bytes();
    for (i, _) in expr.match_indices('{') {
        let start = bytes[..i]
            .iter()
            .rposition(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
            .map_or(0, |p| p + 1);
        if start < i {
            found.push(expr[start..i].to_owned());
        }
    }
    found
}

/// Label names in `by (...)` clauses.
fn grouping_labels(expr: &str) -> Vec<String> {
    expr.match_indices("by (")
        .flat_map(|(i, _)| {
            let rest = &expr[i + 4..];
            let end = rest.find(')').unwrap();
            rest[..end]
                .split(',')
                .map(|l| l.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn dashboard_queries_only_archon_metrics_and_shows_them_all() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/dashboards/archon-services.json"
    ))
    .unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut all = Vec::new();
    exprs(&dashboard, &mut all);
    assert!(all.len() >= 20, "{} queries", all.len());

    let known: BTreeSet<&str> = names::ALL.iter().map(|i| i.prometheus).collect();
    let mut used = BTreeSet::new();
    for expr in &all {
        for selector in selectors(expr) {
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| selector.strip_suffix(s))
                .filter(|b| known.contains(b))
                .unwrap_or(&selector)
                .to_owned();
            assert!(
                known.contains(base.as_str()),
                "unknown metric {selector} in {expr}"
            );
            used.insert(base);
        }
        for label in grouping_labels(expr) {
            let known_label = label == "le"
                || label == names::attr::SERVICE_NAME
                || names::ALL.iter().any(|i| {
                    i.attributes
                        .iter()
                        .any(|a| names::prometheus_label(a) == label)
                });
            assert!(known_label, "unknown label {label} in {expr}");
        }
    }
    let unused: Vec<_> = known.iter().filter(|k| !used.contains(**k)).collect();
    assert!(unused.is_empty(), "not on the dashboard: {unused:?}");
}
