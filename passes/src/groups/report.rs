//! The `cc-compile groups` report: text and JSON.

use super::{ChannelGroup, Discovery, Fixup, GroupKind, Member, Role};
use cc_ir::Graph;
use serde_json::{json, Value};
use std::fmt::Write;

fn kind_text(k: &GroupKind, units: usize) -> String {
    match k {
        GroupKind::Channels => format!("{units} channels"),
        GroupKind::Heads { head_dim, q_per_kv } => {
            format!("{units} heads (head_dim {head_dim}, q_per_kv {q_per_kv})")
        }
    }
}

fn role_text(r: Role) -> &'static str {
    match r {
        Role::Produces => "produces",
        Role::Consumes => "consumes",
        Role::Carries => "carries",
    }
}

fn member_text(g: &Graph, m: &Member) -> String {
    let reader = match m.user {
        Some(n) if g.value(m.value).uses().len() > 1 => format!(" (in {})", g.node_label(n)),
        _ => String::new(),
    };
    format!(
        "{} %{} axis {} offset {} block {} stride {}{reader}",
        role_text(m.role),
        g.value(m.value).name(),
        m.axis,
        m.offset,
        m.block,
        m.stride
    )
}

fn fixup_text(g: &Graph, f: &Fixup) -> String {
    match f {
        Fixup::ShapeDim {
            node,
            value,
            index,
            per_unit,
            ..
        } => format!(
            "shape %{}[{index}] -= {per_unit}/unit (node {})",
            g.value(*value).name(),
            g.node_label(*node)
        ),
        Fixup::SplitSize {
            node,
            value,
            index,
            per_unit,
        } => format!(
            "split sizes %{}[{index}] -= {per_unit}/unit (node {})",
            g.value(*value).name(),
            g.node_label(*node)
        ),
        Fixup::ConvGroups { node, per_unit } => {
            format!("conv group -= {per_unit}/unit (node {})", g.node_label(*node))
        }
        Fixup::SliceBounds {
            node,
            index,
            starts_per_unit,
            ends_per_unit,
            ..
        } => format!(
            "slice bounds [{index}] starts -= {starts_per_unit}/unit, ends -= {ends_per_unit}/unit (node {})",
            g.node_label(*node)
        ),
    }
}

/// Human-readable report (the `cc-compile groups` output): a summary line, then each
/// group with its size, cost, status, members and fixups.
pub fn to_text(g: &Graph, d: &Discovery) -> String {
    let mut s = String::new();
    let prunable = d.groups.iter().filter(|x| x.is_prunable()).count();
    let _ = writeln!(s, "groups: {} ({} prunable)", d.groups.len(), prunable);
    for (i, gr) in d.groups.iter().enumerate() {
        let _ = writeln!(
            s,
            "group {i}: {}, params {}, flops {}, {}",
            kind_text(&gr.kind, gr.units),
            gr.params,
            gr.flops,
            status(gr)
        );
        for m in &gr.members {
            let _ = writeln!(s, "  {}", member_text(g, m));
        }
        for f in &gr.fixups {
            let _ = writeln!(s, "  fixup {}", fixup_text(g, f));
        }
    }
    s
}

fn status(gr: &ChannelGroup) -> String {
    match (&gr.blocked, gr.units) {
        (Some(r), _) => format!("blocked: {r}"),
        (None, 1) => "blocked: a single unit".to_string(),
        (None, _) => "prunable".to_string(),
    }
}

/// The report as JSON: `{"groups": [{units, kind, head_dim?, q_per_kv?, prunable,
/// blocked, params, flops, members: [{value, axis, offset, block, stride, role}],
/// fixups: [text]}]}`.
pub fn to_json(g: &Graph, d: &Discovery) -> Value {
    let groups: Vec<Value> = d
        .groups
        .iter()
        .map(|gr| {
            let mut o = json!({
                "units": gr.units,
                "kind": match gr.kind { GroupKind::Channels => "channels", GroupKind::Heads { .. } => "heads" },
                "prunable": gr.is_prunable(),
                "blocked": gr.blocked,
                "params": gr.params,
                "flops": gr.flops,
                "members": gr.members.iter().map(|m| json!({
                    "value": g.value(m.value).name(),
                    "axis": m.axis,
                    "offset": m.offset,
                    "block": m.block,
                    "stride": m.stride,
                    "role": role_text(m.role),
                    "node": m.user.map(|n| g.node(n).name.clone()),
                })).collect::<Vec<_>>(),
                "fixups": gr.fixups.iter().map(|f| fixup_text(g, f)).collect::<Vec<_>>(),
            });
            if let GroupKind::Heads { head_dim, q_per_kv } = gr.kind {
                o["head_dim"] = json!(head_dim);
                o["q_per_kv"] = json!(q_per_kv);
            }
            o
        })
        .collect();
    json!({ "groups": groups })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cc_ir::{DType, Tensor, ValueType};

    #[test]
    fn text_and_json_show_members_fixups_and_status() {
        let mut g = Graph::new("t");
        let w = g
            .add_const("w", Tensor::from_f32(vec![2, 2], vec![0.0; 4]).unwrap())
            .unwrap();
        let x = g
            .add_value(
                "x",
                Some(ValueType::tensor(
                    DType::F32,
                    cc_ir::types::known_shape(&[1, 2]),
                )),
            )
            .unwrap();
        let d = Discovery {
            groups: vec![ChannelGroup {
                units: 2,
                kind: GroupKind::Heads {
                    head_dim: 1,
                    q_per_kv: 1,
                },
                members: vec![
                    Member {
                        value: w,
                        axis: 0,
                        offset: 0,
                        block: 1,
                        stride: 1,
                        role: Role::Consumes,
                        user: None,
                    },
                    Member {
                        value: x,
                        axis: 1,
                        offset: 0,
                        block: 1,
                        stride: 1,
                        role: Role::Carries,
                        user: None,
                    },
                ],
                fixups: vec![],
                blocked: Some("graph input \"x\"".into()),
                params: 4,
                flops: 4,
            }],
        };
        let text = to_text(&g, &d);
        assert!(text.starts_with("groups: 1 (0 prunable)\n"), "{text}");
        assert!(text.contains("2 heads (head_dim 1, q_per_kv 1)"), "{text}");
        assert!(text.contains("blocked: graph input \"x\""), "{text}");
        assert!(
            text.contains("consumes %w axis 0 offset 0 block 1 stride 1"),
            "{text}"
        );
        let j = to_json(&g, &d);
        assert_eq!(j["groups"][0]["kind"], "heads");
        assert_eq!(j["groups"][0]["prunable"], false);
        assert_eq!(j["groups"][0]["members"][1]["role"], "carries");
    }
}
