//! What a scenario prints: a list of named figures, shown as an aligned table for a
//! person or as one JSON line for a script.
//!
//! Every scenario produces a [`Report`] — an ordered list of [`Metric`]s with a stable
//! `key`, a label and a unit — instead of printing its own way. That keeps output
//! uniform and lets `compare` run scenarios as child processes, read their JSON line
//! back and compute medians and ratios for any figure without knowing what it means.
//!
//! With `--json` the JSON line goes to stdout and the table to stderr, so
//! `switchboard-bench fanout --json | jq` works.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// One measured figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Stable machine name, e.g. `delivered_per_sec`.
    pub key: String,
    /// Human label, e.g. `delivered msgs/s`.
    pub label: String,
    pub unit: String,
    pub value: f64,
}

/// The outcome of one scenario run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    pub url: String,
    pub metrics: Vec<Metric>,
}

impl Report {
    pub fn new(scenario: &str, url: &str) -> Self {
        Self {
            scenario: scenario.to_owned(),
            url: url.to_owned(),
            metrics: Vec::new(),
        }
    }

    pub fn push(&mut self, key: &str, label: &str, unit: &str, value: f64) -> &mut Self {
        self.metrics.push(Metric {
            key: key.to_owned(),
            label: label.to_owned(),
            unit: unit.to_owned(),
            value,
        });
        self
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        self.metrics.iter().find(|m| m.key == key).map(|m| m.value)
    }

    pub fn to_json_line(&self) -> Result<String> {
        serde_json::to_string(self).context("cannot encode the report as JSON")
    }

    /// Finds the report in a child's stdout: the last line that parses as one.
    pub fn from_output(stdout: &str) -> Result<Self> {
        stdout
            .lines()
            .rev()
            .filter(|line| line.trim_start().starts_with('{'))
            .find_map(|line| serde_json::from_str(line).ok())
            .context("no JSON report line in the scenario's output")
    }

    pub fn render_table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .metrics
            .iter()
            .map(|m| vec![m.label.clone(), format_value(m.value), m.unit.clone()])
            .collect();
        format!(
            "{} — {}\n{}",
            self.scenario,
            self.url,
            render_rows(&["figure", "value", "unit"], &rows)
        )
    }

    /// Prints the report: table on stdout, or JSON on stdout and table on stderr.
    pub fn emit(&self, json: bool) -> Result<()> {
        if json {
            eprintln!("{}", self.render_table());
            println!("{}", self.to_json_line()?);
        } else {
            println!("{}", self.render_table());
        }
        Ok(())
    }
}

/// A figure as a person reads it: no decimals for big numbers, three significant
/// digits or so for small ones.
pub fn format_value(value: f64) -> String {
    let magnitude = value.abs();
    if !value.is_finite() {
        "n/a".to_owned()
    } else if magnitude >= 100.0 || value == value.trunc() {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else if magnitude >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// Renders rows under a header as a table: the first column left-aligned, the others
/// right-aligned, columns separated by two spaces.
pub fn render_rows(header: &[&str], rows: &[Vec<String>]) -> String {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, width) in widths.iter().enumerate().take(columns) {
            let cell = row.get(i).map(String::as_str).unwrap_or("");
            let pad = width.saturating_sub(cell.chars().count());
            if i > 0 {
                line.push_str("  ");
            }
            if i == 0 {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_formatted_for_reading() {
        assert_eq!(format_value(1_234_567.8), "1234568");
        assert_eq!(format_value(42.0), "42");
        assert_eq!(format_value(12.345), "12.3");
        assert_eq!(format_value(1.2345), "1.23");
        assert_eq!(format_value(0.01234), "0.012");
        assert_eq!(format_value(f64::NAN), "n/a");
    }

    #[test]
    fn table_columns_line_up() {
        let rows = vec![
            vec!["a long label".to_owned(), "1".to_owned()],
            vec!["b".to_owned(), "12345".to_owned()],
        ];
        let table = render_rows(&["figure", "value"], &rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1], "a long label      1");
        assert_eq!(lines[2], "b             12345");
    }

    #[test]
    fn report_round_trips_through_a_noisy_output() -> Result<()> {
        let mut report = Report::new("fanout", "ws://127.0.0.1:1/ws");
        report.push("delivered_per_sec", "delivered msgs/s", "msg/s", 1000.0);
        let output = format!(
            "fanout — table\n{{not json\n{}\ntrailing text\n",
            report.to_json_line()?
        );
        let back = Report::from_output(&output)?;
        assert_eq!(back, report);
        assert_eq!(back.get("delivered_per_sec"), Some(1000.0));
        assert!(Report::from_output("no report here").is_err());
        Ok(())
    }
}
