//! Reports of `whittle profile` and `whittle bench`: their tables, and for a profile the
//! share of the time per operator type drawn.

use std::collections::BTreeMap;

use whittle_bench::bench::BenchReport;
use whittle_bench::profile::{NodeProfile, Profile};
use whittle_ir::memory::human_bytes;

use super::{human_count, Cell, OpLatency, OpShare, Report, Section};

/// The profile of `model` as a report: summary, operator types, bottlenecks, nodes (shares
/// of the time drawn as bars in HTML).
pub fn profile_report(p: &Profile, model: &str) -> Report {
    let summary = Section {
        title: "Summary".into(),
        notes: vec![
            format!("inputs: {}", shapes(&p.input_shapes)),
            format!("{} timed runs after {} warm-up runs", p.runs, p.warmup),
            format!(
                "time per run: {:.3} ms (nodes: {:.3} ms)",
                p.run_time_ms, p.total_time_ms
            ),
            format!(
                "MACs: {}  FLOPs: {}  parameters: {}",
                human_count(p.total_macs),
                human_count(p.total_flops),
                human_count(p.total_params)
            ),
            format!(
                "peak activation memory: {}",
                human_bytes(p.peak_activation_bytes)
            ),
        ]
        .into_iter()
        .chain(p.notes.iter().map(|n| format!("note: {n}")))
        .collect(),
        ..Default::default()
    };
    let by_op = Section {
        title: "By operator type".into(),
        columns: cols(&[
            "op type",
            "nodes",
            "time ms",
            "share",
            "MACs",
            "params",
            "activations",
        ]),
        rows: p
            .by_op_type
            .iter()
            .map(|g| {
                vec![
                    g.op_type.as_str().into(),
                    g.count.to_string().into(),
                    format!("{:.3}", g.time_ms).into(),
                    Cell::Share(g.share),
                    human_count(g.macs).into(),
                    human_count(g.params).into(),
                    human_bytes(g.activation_bytes).into(),
                ]
            })
            .collect(),
        ..Default::default()
    };
    let bottlenecks = Section {
        title: format!(
            "Bottlenecks (nodes above {:.1}% of the time)",
            p.threshold * 100.0
        ),
        ..node_table(&p.bottlenecks)
    };
    let nodes = Section {
        title: "Nodes in execution order".into(),
        ..node_table(&p.nodes)
    };
    Report {
        title: format!("Profile of {model}"),
        tables: vec![summary, by_op, bottlenecks, nodes],
        ..Default::default()
    }
}

fn node_table(nodes: &[NodeProfile]) -> Section {
    Section {
        columns: cols(&[
            "node",
            "op type",
            "output",
            "time ms",
            "share",
            "MACs",
            "FLOPs",
            "params",
            "activations",
        ]),
        rows: nodes
            .iter()
            .map(|n| {
                vec![
                    n.name.as_str().into(),
                    n.op_type.as_str().into(),
                    dims(&n.output_shape).into(),
                    format!("{:.3}", n.time_ms).into(),
                    Cell::Share(n.share),
                    human_count(n.macs).into(),
                    human_count(n.flops).into(),
                    human_count(n.params).into(),
                    human_bytes(n.activation_bytes).into(),
                ]
            })
            .collect(),
        ..Default::default()
    }
}

/// The benchmark as a report: one row per batch size.
pub fn bench_report(b: &BenchReport) -> Report {
    let mut notes: Vec<&String> = b.batches.iter().flat_map(|r| &r.notes).collect();
    notes.dedup();
    let table = Section {
        title: "Latency and throughput".into(),
        notes: vec![
            format!(
                "engine {}, {} threads, {} timed runs after {} warm-up runs",
                b.engine, b.threads, b.runs, b.warmup
            ),
            format!(
                "size on disk {}, {} parameters",
                human_bytes(b.size_bytes),
                human_count(b.params)
            ),
            format!("peak memory: {}", b.memory_method),
        ]
        .into_iter()
        .chain(notes.into_iter().map(|n| format!("note: {n}")))
        .collect(),
        columns: cols(&[
            "batch",
            "inputs",
            "mean ms",
            "median ms",
            "p90 ms",
            "p99 ms",
            "std ms",
            "samples/s",
            "FPS",
            "peak RSS",
        ]),
        rows: b
            .batches
            .iter()
            .map(|r| {
                let l = &r.latency;
                vec![
                    r.batch.to_string().into(),
                    shapes(&r.input_shapes).into(),
                    format!("{:.3}", l.mean_ms).into(),
                    format!("{:.3}", l.median_ms).into(),
                    format!("{:.3}", l.p90_ms).into(),
                    format!("{:.3}", l.p99_ms).into(),
                    format!("{:.3}", l.std_ms).into(),
                    format!("{:.1}", r.throughput).into(),
                    format!("{:.1}", r.fps).into(),
                    r.peak_rss_bytes.map_or("?".into(), human_bytes).into(),
                ]
            })
            .collect(),
    };
    Report {
        title: format!("Benchmark of {}", b.model),
        tables: vec![table],
        ..Default::default()
    }
}

fn cols(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn dims(d: &[usize]) -> String {
    let parts: Vec<String> = d.iter().map(usize::to_string).collect();
    format!("[{}]", parts.join(","))
}

fn shapes(s: &BTreeMap<String, Vec<usize>>) -> String {
    let parts: Vec<String> = s.iter().map(|(n, d)| format!("{n} {}", dims(d))).collect();
    parts.join(", ")
}

/// Where `profile`'s time goes per operator type, for the report's before/after plot of
/// the models named `model`.
pub fn op_latency(profile: &Profile, model: &str) -> OpLatency {
    OpLatency {
        model: model.to_string(),
        ops: (profile.by_op_type.iter())
            .map(|g| OpShare {
                op_type: g.op_type.clone(),
                time_ms: g.time_ms,
                share: g.share,
            })
            .collect(),
    }
}
