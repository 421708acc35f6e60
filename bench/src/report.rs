//! Figures: medians over runs, percentiles, and the summary/JSON output.

use std::time::Duration;

use serde_json::{json, Map, Value};

/// Latency percentiles of one run, in milliseconds.
pub fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    if samples.is_empty() {
        return (0.0, 0.0);
    }
    samples.sort();
    let at = |q: f64| {
        let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[index].as_secs_f64() * 1000.0
    };
    (at(0.50), at(0.99))
}

pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// One scenario's figures: named values, each the median of its runs, plus the raw runs.
pub struct Report {
    scenario: String,
    config: Value,
    runs: Vec<Map<String, Value>>,
}

impl Report {
    pub fn new(scenario: &str, config: Value) -> Report {
        Report {
            scenario: scenario.to_owned(),
            config,
            runs: Vec::new(),
        }
    }

    /// Records one run's figures and prints them at once.
    pub fn add_run(&mut self, figures: Value) {
        eprintln!("  run {}: {figures}", self.runs.len() + 1);
        if let Value::Object(map) = figures {
            self.runs.push(map);
        }
    }

    fn medians(&self) -> Map<String, Value> {
        let mut out = Map::new();
        if let Some(first) = self.runs.first() {
            for key in first.keys() {
                let values: Vec<f64> = self
                    .runs
                    .iter()
                    .filter_map(|run| run.get(key)?.as_f64())
                    .collect();
                out.insert(key.clone(), json!((median(values) * 100.0).round() / 100.0));
            }
        }
        out
    }

    /// Prints the human summary (stderr) and the JSON line (stdout). Each ratio is the median over runs
    /// of `numerator / denominator` within a run: a run pairs jobdock with the baseline measured right
    /// after it, so the ratio holds up when the shared machine's speed drifts from run to run.
    pub fn finish(self, ratios: &[(&str, &str, &str)]) {
        let medians = self.medians();
        let mut ratio_values = Map::new();
        for (name, numerator, denominator) in ratios {
            let per_run: Vec<f64> = self
                .runs
                .iter()
                .filter_map(|run| {
                    let n = run.get(*numerator)?.as_f64()?;
                    let d = run.get(*denominator)?.as_f64()?;
                    (d > 0.0).then_some(n / d)
                })
                .collect();
            if !per_run.is_empty() {
                ratio_values.insert(
                    (*name).to_owned(),
                    json!((median(per_run) * 100.0).round() / 100.0),
                );
            }
        }
        eprintln!("{}: medians of {} runs", self.scenario, self.runs.len());
        for (key, value) in &medians {
            eprintln!("  {key:<28} {value}");
        }
        for (key, value) in &ratio_values {
            eprintln!("  {key:<28} {value}x");
        }
        let line = json!({
            "scenario": self.scenario,
            "config": self.config,
            "runs": self.runs.len(),
            "median": medians,
            "ratios": ratio_values,
        });
        println!("{line}");
    }
}
