//! Tables for people, JSON for machines, and the final error report.

use std::io::Write;

use comfy_table::presets::NOTHING;
use comfy_table::{Cell, Table};
use serde::Serialize;

use crate::exit::Failure;

pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_style(NOTHING);
    t.set_header(header.iter().map(|h| Cell::new(h.to_uppercase())));
    for r in rows {
        t.add_row(r);
    }
    // comfy-table pads every line; trailing blanks only get in the way of diffs and tests.
    t.to_string()
        .lines()
        .map(|l| l.trim_end().trim_start_matches(' '))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn print_json<T: Serialize>(value: &T) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer_pretty(&mut out, value);
    let _ = writeln!(out);
}

pub fn print_failure(f: &Failure) {
    let mut said = f.error.to_string();
    eprintln!("error: {said}");
    // Errors keep their causes as sources, and many also quote them in their own message: a
    // cause already said is not said again.
    for cause in f.error.chain().skip(1) {
        let text = cause.to_string();
        if said.contains(&text) {
            continue;
        }
        eprintln!("  caused by: {text}");
        said.push_str(&text);
    }
    for h in &f.hints {
        eprintln!("hint: {h}");
    }
}

/// `3h12m`, `45m`, `expired 2h ago`.
pub fn time_left(expires: time::OffsetDateTime) -> String {
    let left = expires - time::OffsetDateTime::now_utc();
    let secs = left.whole_seconds();
    let fmt = |s: i64| {
        let (h, m) = (s / 3600, (s % 3600) / 60);
        if h > 0 {
            format!("{h}h{m:02}m")
        } else {
            format!("{m}m")
        }
    };
    if left.is_negative() {
        format!("expired {} ago", fmt(-secs))
    } else {
        fmt(secs)
    }
}

pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
