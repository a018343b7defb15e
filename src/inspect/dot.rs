//! The recorded graph as Graphviz DOT ([`Tape::to_dot`]).

use std::fmt::Write;

use crate::tape::{Value, source};
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
            let mut label = format!(
                "{} #{id}\n{} × {}\n{}:{}",
                node.op,
                node.shape.0,
                node.shape.1,
                node.location.file(),
                node.location.line()
            );
            if node.rule.is_some() {
                let inputs = inner.inputs_of(node);
                let saved: Vec<String> = node
                    .saves
                    .ids(id, inputs)
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
            let released = matches!(inner.values[source(&inner.values, id)], Value::Released(_));
            if released {
                label.push_str("\n(released)");
            }
            let mut style = vec![if node.requires_grad {
                "solid"
            } else {
                "dashed"
            }];
            let mut fill = None;
            if node.leaf && node.requires_grad {
                fill = Some("#dbeafe");
            }
            if released {
                fill = Some("#e5e7eb");
            }
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
                let _ = write!(out, ", fillcolor=\"{fill}\"");
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
