//! Mermaid export of a definition.

use std::fmt::Write as _;

use super::{SagaDef, StepKind};

fn esc(s: &str) -> String {
    s.replace('"', "#quot;")
}

pub(super) fn render(def: &SagaDef) -> String {
    let mut out = String::from("flowchart LR\n");
    let _ = writeln!(
        out,
        "    start((\"{} v{}\")) --> s0",
        esc(&def.name),
        def.version
    );
    for (i, step) in def.steps.iter().enumerate() {
        let name = esc(&step.name);
        let _ = match step.kind {
            StepKind::Compensatable => writeln!(out, "    s{i}[\"{name}\"]"),
            StepKind::Pivot => writeln!(out, "    s{i}{{{{\"{name} (pivot)\"}}}}"),
            StepKind::Retriable => writeln!(out, "    s{i}([\"{name} (retriable)\"])"),
        };
        let next = if i + 1 == def.steps.len() {
            "done((completed))".to_owned()
        } else {
            format!("s{}", i + 1)
        };
        let _ = writeln!(out, "    s{i} --> {next}");
    }
    let compensatable: Vec<usize> = def
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.kind == StepKind::Compensatable)
        .map(|(i, _)| i)
        .collect();
    for &i in &compensatable {
        let _ = writeln!(out, "    c{i}[/\"undo {}\"/]", esc(&def.steps[i].name));
        let prev = if i == 0 {
            "compensated((compensated))".to_owned()
        } else {
            format!("c{}", i - 1)
        };
        let _ = writeln!(out, "    c{i} --> {prev}");
    }
    // A failing step (before the pivot completes) starts compensating the step before it.
    for (i, step) in def.steps.iter().enumerate() {
        if step.kind == StepKind::Retriable {
            break;
        }
        let target = if i == 0 {
            "compensated((compensated))".to_owned()
        } else {
            format!("c{}", i - 1)
        };
        let _ = writeln!(out, "    s{i} -. fails .-> {target}");
    }
    out
}
