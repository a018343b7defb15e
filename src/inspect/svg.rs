//! The recorded graph drawn as SVG in Rust ([`Tape::to_svg`]), laid out by `layout-rs`:
//! no Graphviz needed.
//!
//! `layout-rs` lays a graph out in layers (Sugiyama): it splits every edge that skips
//! layers into one bend per layer crossed, sinks nodes to shorten edges, then reorders
//! each layer 50 times to reduce crossings, counting the crossings of every pair of a
//! layer against the next one (cubic in a layer's width), and places the boxes (quadratic
//! in the number of boxes and bends). Its time grows with that lowered graph, not with
//! the tape's node count alone: a weight shared by every step of an unrolled loop adds a
//! bend per layer to each of its edges. [`Tape::to_svg`] estimates the lowered graph
//! first, as `layout-rs` builds it, and refuses a graph whose layout would take long, in
//! time linear in its nodes, edges and layers.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe, Location};
use std::sync::Once;

use layout::backends::svg::SVGWriter;
use layout::core::base::Orientation;
use layout::core::color::Color;
use layout::core::geometry::Point;
use layout::core::style::StyleAttr;
use layout::std_shapes::shapes::{Arrow, Element, ShapeKind};
use layout::topo::layout::VisualGraph;

use super::dot::{fill, label};
use crate::error::{Error, ErrorKind, Result};
use crate::tape::Inner;
use crate::{Float, Tape};

/// The labels' font size, in pixels.
const FONT: f64 = 11.;

/// The most nodes [`Tape::to_svg`] lays out: past it, it returns
/// [`ErrorKind::DrawingTooLarge`] at once, without laying anything out. Render such a
/// graph with Graphviz from [`Tape::to_dot`].
pub const SVG_MAX_NODES: usize = 1000;

/// The most elements of the lowered drawing (boxes, input labels, and one bend per layer
/// an edge crosses) that [`Tape::to_svg`] lays out: the placement is quadratic in them.
const MAX_ELEMENTS: u64 = 5000;

/// The most work `layout-rs`'s crossing reduction may take: Σ over adjacent layers of
/// (width × the sum of the degrees in the upper layer × width of the lower layer), what
/// one of its 50 passes counts. At this bound the worst graphs measured (a weight shared
/// by every layer of a chain) take about a second.
const MAX_CROSSING_WORK: u64 = 300_000;

impl<F: Float> Tape<'_, F> {
    /// The graph recorded so far as an SVG image, drawn in Rust (the `layout-rs` crate's
    /// Sugiyama layout; no Graphviz needed): the boxes of [`Tape::to_dot`] (name, op, node
    /// number, shape, caller's line, what the rule saves), inputs above the ops that use
    /// them, parameters blue, released values grey, constants (no gradient) with a grey
    /// border. Characters that XML does not allow (control characters in a name) are
    /// written as Rust escapes (`\u{1}`).
    ///
    /// The layout is meant for small graphs: it takes time super-linear in the drawing's
    /// size, so graphs of more than [`SVG_MAX_NODES`] nodes, and smaller ones whose
    /// layered drawing would be large (very wide layers, or inputs shared by ops far
    /// apart, such as a weight used by every step of an unrolled loop, whose edges bend
    /// once per layer they cross), are refused at once; render those with Graphviz from
    /// [`Tape::to_dot`], which handles any size. Within the bounds a drawing takes at
    /// most about a second.
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let tape = Tape::new();
    /// let x = tape.constant(array![[1.0, 2.0]]).named("X");
    /// let w = tape.param(array![[0.5], [-1.0]]).named("W");
    /// let _loss = x.matmul(w).sigmoid().sum();
    /// let svg = tape.to_svg().unwrap();
    /// assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"));
    /// assert!(svg.contains("sigmoid #3"));
    /// // std::fs::write("tape.svg", svg)?;
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::DrawingTooLarge`] for a graph past the bounds above (decided before
    /// any layout, in time linear in the graph's size);
    /// [`ErrorKind::Layout`] if `layout-rs` fails on the graph. Its Brandes–Köpf
    /// placement breaks its own invariants on a few small graphs (a panic inside the
    /// crate); `to_svg` catches that and draws the graph again with `layout-rs`'s simple
    /// placement (each layer's boxes side by side from the left), so this error comes
    /// only if that fails too.
    ///
    /// Catching the panic needs unwinding: with `panic = "abort"` such a graph aborts
    /// the process. So that the caught panic prints nothing, the first call that lays a
    /// graph out wraps the process's panic hook ([`std::panic::set_hook`]) with one that
    /// is silent for panics inside `layout-rs` during a layout on that thread and passes
    /// every other panic to the hook installed before.
    #[track_caller]
    pub fn to_svg(&self) -> Result<String> {
        let location = Location::caller();
        let inner = self.inner();
        let nodes = inner.nodes.len();
        if nodes == 0 {
            return Ok(SVGWriter::new().finalize());
        }
        let too_large = |reason| {
            Err(Error::new(
                "to_svg",
                ErrorKind::DrawingTooLarge { nodes, reason },
                location,
            ))
        };
        if nodes > SVG_MAX_NODES {
            return too_large("more nodes than SVG_MAX_NODES");
        }
        let size = DrawingSize::of(&inner);
        if size.elements > MAX_ELEMENTS {
            return too_large(
                "its layered drawing has too many boxes and edge bends (an input shared by \
                 ops far apart bends once per layer between them)",
            );
        }
        if size.crossing_work > MAX_CROSSING_WORK {
            return too_large("its layers are too wide to reduce edge crossings in");
        }
        // Brandes–Köpf placement first; if layout-rs panics, its simple placement
        let mut message = String::new();
        for simple in [false, true] {
            let mut graph = visual_graph(&inner);
            let mut svg = SVGWriter::new();
            match quietly(|| graph.do_it(false, false, simple, &mut svg)) {
                Ok(()) => return Ok(svg.finalize()),
                Err(payload) => {
                    message = payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic without a message".into());
                }
            }
        }
        Err(Error::new(
            "to_svg",
            ErrorKind::Layout { message },
            location,
        ))
    }
}

/// The graph as `layout-rs` takes it: one box per node, an edge from each input, labelled
/// with the input's position for ops of several inputs.
fn visual_graph<F: Float>(inner: &Inner<'_, F>) -> VisualGraph {
    let mut graph = VisualGraph::new(Orientation::TopToBottom);
    // The DAG's self-check walks the whole graph after every edge added, which alone
    // makes the layout cubic; the graph comes from a tape, acyclic by construction.
    graph.dag.set_validate(false);
    let mut handles = Vec::with_capacity(inner.nodes.len());
    for (id, node) in inner.nodes.iter().enumerate() {
        let border = if node.requires_grad {
            0x1f2937ff
        } else {
            0x9ca3afff
        };
        // layout-rs colours are 0xRRGGBBAA
        let fill = fill(inner, id).map_or(0xffffffff, |rgb| (rgb << 8) | 0xff);
        let look = StyleAttr::new(
            Color::new(border),
            1,
            Some(Color::new(fill)),
            4,
            FONT as usize,
        );
        let text = xml_text(label(inner, id));
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
    graph
}

/// `text` with the characters XML 1.0 does not allow (control characters other than tab,
/// line feed and carriage return; U+FFFE and U+FFFF) written as Rust escapes, `\u{1}`.
/// `layout-rs` escapes the markup characters itself.
fn xml_text(text: String) -> String {
    let allowed = |c: char| match c {
        '\t' | '\n' | '\r' => true,
        '\u{fffe}' | '\u{ffff}' => false,
        c => c >= ' ',
    };
    if text.chars().all(allowed) {
        return text;
    }
    text.chars()
        .map(|c| {
            if allowed(c) {
                c.to_string()
            } else {
                c.escape_unicode().to_string()
            }
        })
        .collect()
}

thread_local! {
    /// Whether this thread is inside `layout-rs`, whose panics the hook keeps quiet.
    static LAYING_OUT: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` (a call into `layout-rs`), catching a panic without printing it: the first
/// call wraps the panic hook with one that is silent while this thread is in `quietly`.
fn quietly<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !LAYING_OUT.try_with(Cell::get).unwrap_or(false) {
                previous(info);
            }
        }));
    });
    /// Restores the flag, on return or unwind.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            LAYING_OUT.with(|l| l.set(self.0));
        }
    }
    let _restore = Restore(LAYING_OUT.replace(true));
    panic::catch_unwind(AssertUnwindSafe(f))
}

/// The size of a tape's graph as `layout-rs` lowers it before placing it: computed as
/// `layout-rs` does (a connector node per labelled edge, longest-path layers, nodes sunk
/// towards their users, a bend per layer an edge crosses), in time linear in the nodes,
/// edges and layers.
#[derive(Debug)]
struct DrawingSize {
    /// Boxes, input labels and bends.
    elements: u64,
    /// One pass of the crossing reduction; see [`MAX_CROSSING_WORK`].
    crossing_work: u64,
}

impl DrawingSize {
    fn of<F: Float>(inner: &Inner<'_, F>) -> Self {
        let n = inner.nodes.len();
        // the lowered graph: the nodes, then a connector per labelled edge, in the order
        // layout-rs adds them
        let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut pred: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (id, node) in inner.nodes.iter().enumerate() {
            let inputs = inner.inputs_of(node);
            for &i in inputs {
                if inputs.len() > 1 {
                    let c = succ.len();
                    succ.push(vec![id]);
                    pred.push(vec![i]);
                    succ[i].push(c);
                    pred[id].push(c);
                } else {
                    succ[i].push(id);
                    pred[id].push(i);
                }
            }
        }
        let total = succ.len();
        // longest-path layers: a node's inputs come before it on the tape, and a
        // connector's layer is its input's plus one
        let mut level = vec![0usize; total];
        for v in 0..n {
            for k in 0..pred[v].len() {
                let p = pred[v][k];
                if p >= n {
                    level[p] = level[pred[p][0]] + 1;
                }
                level[v] = level[v].max(level[p] + 1);
            }
        }
        // layout-rs's rank optimizer: every node with no more inputs than users sinks to
        // just above its first user, until nothing moves. A node's final layer depends
        // only on its users' final layers, so one pass from the last node up (each node
        // before the connectors into it) finds the fixed point layout-rs iterates to.
        let sink = |v: usize, level: &mut Vec<usize>| {
            let (b, f) = (pred[v].len(), succ[v].len());
            if b <= f && f > 0 {
                let next = succ[v].iter().map(|&s| level[s]).min().unwrap_or(0);
                level[v] = level[v].max(next - 1);
            }
        };
        for v in (0..n).rev() {
            sink(v, &mut level);
            for &p in &pred[v] {
                if p >= n {
                    sink(p, &mut level);
                }
            }
        }
        // each layer's width and degree sum, counting an edge's bend in every layer it
        // crosses (bends have degree 2)
        let layers = level.iter().max().map_or(0, |l| l + 1);
        let mut width = vec![0u64; layers];
        let mut degree = vec![0u64; layers];
        let mut crossing = vec![0i64; layers + 1];
        let mut elements = total as u64;
        for v in 0..total {
            width[level[v]] += 1;
            degree[level[v]] += (succ[v].len() + pred[v].len()) as u64;
            for &s in &succ[v] {
                elements += (level[s] - level[v] - 1) as u64;
                crossing[level[v] + 1] += 1;
                crossing[level[s]] -= 1;
            }
        }
        let mut bends = 0i64;
        for r in 0..layers {
            bends += crossing[r];
            width[r] += bends as u64;
            degree[r] += 2 * bends as u64;
        }
        let crossing_work = (1..layers)
            .map(|r| {
                width[r - 1]
                    .saturating_mul(degree[r - 1])
                    .saturating_mul(width[r])
            })
            .fold(0u64, u64::saturating_add);
        DrawingSize {
            elements,
            crossing_work,
        }
    }
}
