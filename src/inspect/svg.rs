//! The recorded graph drawn as SVG in Rust ([`Tape::to_svg`]), laid out by `layout-rs`:
//! no Graphviz needed.

use layout::backends::svg::SVGWriter;
use layout::core::base::Orientation;
use layout::core::color::Color;
use layout::core::geometry::Point;
use layout::core::style::StyleAttr;
use layout::std_shapes::shapes::{Arrow, Element, ShapeKind};
use layout::topo::layout::VisualGraph;

use super::dot::{fill, label};
use crate::{Float, Tape};

/// The labels' font size, in pixels.
const FONT: f64 = 11.;

impl<F: Float> Tape<'_, F> {
    /// The graph recorded so far as an SVG image, drawn in Rust (the `layout-rs` crate's
    /// Sugiyama layout; no Graphviz needed): the boxes of [`Tape::to_dot`] (name, op, node
    /// number, shape, caller's line, what the rule saves), inputs above the ops that use
    /// them, parameters blue, released values grey, constants (no gradient) with a grey
    /// border. The layout is meant for graphs of up to a few hundred nodes; for larger
    /// ones render [`Tape::to_dot`] with Graphviz.
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.constant(array![[1.0, 2.0]]).named("X");
    /// let w = tape.param(array![[0.5], [-1.0]]).named("W");
    /// let _loss = x.matmul(w).sigmoid().sum();
    /// let svg = tape.to_svg();
    /// assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"));
    /// assert!(svg.contains("sigmoid #3"));
    /// // std::fs::write("tape.svg", svg)?;
    /// ```
    pub fn to_svg(&self) -> String {
        let inner = self.inner();
        let mut graph = VisualGraph::new(Orientation::TopToBottom);
        let mut handles = Vec::with_capacity(inner.nodes.len());
        for (id, node) in inner.nodes.iter().enumerate() {
            let border = if node.requires_grad {
                0x1f2937ff
            } else {
                0x9ca3afff
            };
            // layout-rs colours are 0xRRGGBBAA
            let fill = fill(&inner, id).map_or(0xffffffff, |rgb| (rgb << 8) | 0xff);
            let look = StyleAttr::new(
                Color::new(border),
                1,
                Some(Color::new(fill)),
                4,
                FONT as usize,
            );
            let text = label(&inner, id);
            // room for the text: about 0.6 em per character, 1.2 em per line
            let chars = text.lines().map(|l| l.chars().count()).max().unwrap_or(1);
            let size = Point::new(
                chars as f64 * FONT * 0.6 + 16.,
                text.lines().count() as f64 * FONT * 1.2 + 12.,
            );
            let shape = ShapeKind::new_box(&text);
            let element = Element::create(shape, look, Orientation::TopToBottom, size);
            handles.push(graph.add_node(element));
        }
        for (id, node) in inner.nodes.iter().enumerate() {
            let inputs = inner.inputs_of(node);
            for (k, &i) in inputs.iter().enumerate() {
                // the input's position matters only for ops of several inputs
                let text = if inputs.len() > 1 {
                    k.to_string()
                } else {
                    String::new()
                };
                graph.add_edge(Arrow::simple(&text), handles[i], handles[id]);
            }
        }
        let mut svg = SVGWriter::new();
        if !inner.nodes.is_empty() {
            graph.do_it(false, false, false, &mut svg);
        }
        svg.finalize()
    }
}
