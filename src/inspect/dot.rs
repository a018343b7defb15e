//! The recorded graph as Graphviz DOT ([`Tape::to_dot`]).

use std::fmt::Write;

use crate::tape::{Inner, NodeId, Value, source};
use crate::{Float, Tape};

impl<F: Float> Tape<'_, F> {
    /// The graph recorded so far, in Graphviz's DOT language: one box per tensor with its
    /// op, node number, shape and the caller's line that made it, and what its rule will
    /// read in backward (`saves`); an edge from each input to its op, labelled with the
    /// input's position. Tensors that require a gradient are drawn solid, constants
    /// dashed, parameters filled blue; values released by backward are grey and say so.
    /// Render it with `dot -Tsvg tape.dot > tape.svg` or any DOT viewer.
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.constant(array![[1.0, 2.0]]);
    /// let w = tape.param(array![[0.5], [-1.0]]);
    /// let loss = x.matmul(w).sigmoid().sum();
    /// let dot = tape.to_dot();
    /// assert!(dot.starts_with("digraph tape {"));
    /// assert!(dot.contains(r"matmul #2\n1 × 1"));
    /// assert!(dot.contains("n0 -> n2 [label=\"0\"]"));
    /// # let _ = loss;
    /// ```
    pub fn to_dot(&self) -> String {
        let inner = self.inner();
        let mut out = String::from(
            "digraph tape {\n  rankdir=BT;\n  node [shape=box, fontname=\"monospace\", fontsize=10];\n",
        );
        for (id, node) in inner.nodes.iter().enumerate() {
            let label = label(&inner, id);
            let mut style = vec![if node.requires_grad {
                "solid"
            } else {
                "dashed"
            }];
            let fill = fill(&inner, id);
            if fill.is_some() {
                style.push("filled");
            }
            let _ = write!(
                out,
                "  n{id} [label=\"{}\", style=\"{}\"",
                escape(&label),
                style.join(",")
            );
            if let Some(fill) = fill {
                let _ = write!(out, ", fillcolor=\"#{fill:06x}\"");
            }
            out.push_str("];\n");
            for (k, i) in inner.inputs_of(node).iter().enumerate() {
                let _ = writeln!(out, "  n{i} -> n{id} [label=\"{k}\"];");
            }
        }
        out.push_str("}\n");
        out
    }
}

/// A node's label: its name if it has one, op and node number, shape, the caller's line
/// that made it, what its rule saves, and whether backward released its value.
pub(super) fn label<F: Float>(inner: &Inner<'_, F>, id: NodeId) -> String {
    let node = &inner.nodes[id];
    let mut label = match super::name_of(inner.names(), id) {
        Some(name) => format!("{name} = {} #{id}", node.op),
        None => format!("{} #{id}", node.op),
    };
    let _ = write!(
        label,
        "\n{} × {}\n{}:{}",
        node.shape.0,
        node.shape.1,
        node.location.file(),
        node.location.line()
    );
    if node.rule.is_some() {
        let saved: Vec<String> = node
            .saves
            .ids(id, inner.inputs_of(node))
            .map(|s| {
                if s == id {
                    "output".into()
                } else {
                    format!("#{s}")
                }
            })
            .collect();
        if !saved.is_empty() {
            let _ = write!(label, "\nsaves {}", saved.join(", "));
        }
    }
    if released(inner, id) {
        label.push_str("\n(released)");
    }
    label
}

/// A node's fill colour as `0xRRGGBB`: grey once backward released its value, light blue
/// for a parameter (a leaf that requires a gradient), none otherwise.
pub(super) fn fill<F: Float>(inner: &Inner<'_, F>, id: NodeId) -> Option<u32> {
    let node = &inner.nodes[id];
    if released(inner, id) {
        Some(0xe5e7eb)
    } else if node.leaf && node.requires_grad {
        Some(0xdbeafe)
    } else {
        None
    }
}

/// Whether backward released node `id`'s value (or its source's).
pub(super) fn released<F: Float>(inner: &Inner<'_, F>, id: NodeId) -> bool {
    matches!(inner.values[source(&inner.values, id)], Value::Released(_))
}

/// A DOT string literal's contents: quotes and backslashes escaped, newlines as `\n`.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn labels_are_escaped() {
        assert_eq!(super::escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
