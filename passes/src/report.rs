//! The report of a pipeline run: per-pass figures as a text table or JSON.

use crate::pass::Stat;
use crate::stats::GraphStats;
use serde_json::{json, Map, Value};

/// What one pass did.
#[derive(Clone, Debug, PartialEq)]
pub struct PassRecord {
    /// Registered pass name.
    pub name: String,
    /// Canonical form with options (as in the pipeline text).
    pub canonical: String,
    /// Whether the pass changed the graph.
    pub changed: bool,
    /// Wall time in milliseconds.
    pub time_ms: f64,
    /// Figures before the pass.
    pub before: GraphStats,
    /// Figures after the pass.
    pub after: GraphStats,
    /// The pass's statistics, in recording order.
    pub stats: Vec<(String, Stat)>,
}

/// The report of a whole run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// The canonical pipeline that ran (including the leading `canonicalize`, if any).
    pub pipeline: String,
    /// One record per pass, in order.
    pub passes: Vec<PassRecord>,
    /// Figures before the first pass.
    pub before: GraphStats,
    /// Figures after the last pass.
    pub after: GraphStats,
    /// Peak resident memory of the whole process, when the caller measured it.
    pub peak_memory_bytes: Option<u64>,
}

fn stat_json(s: &Stat) -> Value {
    match s {
        Stat::Int(v) => json!(v),
        Stat::Float(v) => json!(v),
        Stat::Text(t) => json!(t),
    }
}

fn stats_json(g: &GraphStats) -> Value {
    json!({"nodes": g.nodes, "params": g.params, "bytes": g.bytes})
}

impl Report {
    /// Total wall time of all passes in milliseconds.
    pub fn total_ms(&self) -> f64 {
        self.passes.iter().map(|p| p.time_ms).sum()
    }

    /// An aligned text table: pass, time, nodes/params/bytes before->after, stats.
    pub fn to_table(&self) -> String {
        self.table(true)
    }

    /// The table without the time column: deterministic, for snapshots.
    pub fn to_table_without_timings(&self) -> String {
        self.table(false)
    }

    fn table(&self, with_time: bool) -> String {
        let header = ["pass", "time ms", "nodes", "params", "bytes", "stats"];
        let arrow = |a: usize, b: usize| format!("{a}->{b}");
        let mut rows: Vec<[String; 6]> = vec![header.map(str::to_string)];
        for p in &self.passes {
            let stats: Vec<String> = p.stats.iter().map(|(k, v)| format!("{k}={v}")).collect();
            rows.push([
                p.canonical.clone(),
                format!("{:.2}", p.time_ms),
                arrow(p.before.nodes, p.after.nodes),
                arrow(p.before.params, p.after.params),
                arrow(p.before.bytes, p.after.bytes),
                stats.join(" "),
            ]);
        }
        rows.push([
            "total".to_string(),
            format!("{:.2}", self.total_ms()),
            arrow(self.before.nodes, self.after.nodes),
            arrow(self.before.params, self.after.params),
            arrow(self.before.bytes, self.after.bytes),
            String::new(),
        ]);
        let columns: &[usize] = if with_time {
            &[0, 1, 2, 3, 4, 5]
        } else {
            &[0, 2, 3, 4, 5]
        };
        let widths: Vec<usize> = (0..6)
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for r in &rows {
            let mut line = String::new();
            for &c in columns {
                let cell = &r[c];
                let pad = widths[c] - cell.chars().count();
                // Numbers right-aligned, text left-aligned.
                if c == 0 || c == 5 {
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad));
                } else {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                }
                line.push_str("  ");
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// JSON with sorted keys. Everything is deterministic except the `timings` part.
    pub fn to_json(&self) -> String {
        let passes: Vec<Value> = self
            .passes
            .iter()
            .map(|p| {
                let stats: Map<String, Value> = p
                    .stats
                    .iter()
                    .map(|(k, v)| (k.clone(), stat_json(v)))
                    .collect();
                json!({
                    "name": p.name,
                    "canonical": p.canonical,
                    "changed": p.changed,
                    "before": stats_json(&p.before),
                    "after": stats_json(&p.after),
                    "stats": stats,
                })
            })
            .collect();
        let timings: Vec<Value> = self
            .passes
            .iter()
            .map(|p| json!({"pass": p.canonical, "ms": p.time_ms}))
            .collect();
        let v = json!({
            "pipeline": self.pipeline,
            "before": stats_json(&self.before),
            "after": stats_json(&self.after),
            "passes": passes,
            "timings": {"passes": timings, "total_ms": self.total_ms(), "peak_memory_bytes": self.peak_memory_bytes},
        });
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ms: f64) -> Report {
        let before = GraphStats {
            nodes: 10,
            params: 100,
            bytes: 400,
        };
        let after = GraphStats {
            nodes: 7,
            params: 90,
            bytes: 360,
        };
        Report {
            pipeline: "fold".into(),
            passes: vec![PassRecord {
                name: "fold".into(),
                canonical: "fold".into(),
                changed: true,
                time_ms: ms,
                before,
                after,
                stats: vec![
                    ("folded".into(), Stat::Int(3)),
                    ("b".into(), Stat::Float(0.5)),
                ],
            }],
            before,
            after,
            peak_memory_bytes: None,
        }
    }

    #[test]
    fn table_is_aligned() {
        let t = sample(1.234).to_table();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("pass "));
        assert!(lines[1].contains("1.23") && lines[1].contains("10->7"));
        assert!(lines[1].contains("folded=3 b=0.5"));
        assert!(lines[2].starts_with("total"));
        let col = |l: &str| l.find("->").unwrap();
        assert_eq!(col(lines[1]), col(lines[2]), "nodes column aligned:\n{t}");
    }

    #[test]
    fn json_is_deterministic_outside_timings() {
        let a: Value = serde_json::from_str(&sample(1.0).to_json()).unwrap();
        let b: Value = serde_json::from_str(&sample(9.0).to_json()).unwrap();
        assert_ne!(a, b);
        let strip = |mut v: Value| {
            v.as_object_mut().unwrap().remove("timings");
            v
        };
        assert_eq!(strip(a.clone()), strip(b));
        assert_eq!(a["passes"][0]["stats"]["folded"], 3);
        assert_eq!(a["passes"][0]["after"]["nodes"], 7);
        assert_eq!(a["timings"]["passes"][0]["ms"], 1.0);
    }
}
