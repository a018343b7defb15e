//! Explain mode: the backward pass as the matrix equations it executes ([`Tape::explain`]).
//!
//! The equations are written in the notation of the textbook derivations the library is
//! built on (the seeds of `tests/seeds.rs`): `G` is the gradient arriving at the root (the seed, 1 for
//! a scalar loss), `dW` the gradient of a leaf named `W`, `H_error` the gradient of a named
//! intermediate `H`, `O_delta` the gradient of the input of an activation whose output is
//! named `O` (the error times the activation's derivative), `ᵀ` a transpose, `·` a matrix
//! product, `∘` an elementwise product, `1ᵀ · A` the column sums of `A` (seed 003).
//!
//! Each op's equations are those of its array rule (the VJP column of the rule table in
//! [`crate::ops`]); a test builds every op of that table and requires an equation for it.

use std::fmt;
use std::panic::Location;

use crate::error::{Error, ErrorKind, Result};
use crate::rule::Rule;
use crate::tape::NodeId;
use crate::{Float, Tape, Tensor};

/// # Names
///
/// For explain mode and the graph views.
impl<'t, F: Float> Tensor<'t, F> {
    /// Gives this tensor a name, used by [`Tape::explain`], [`Tape::to_dot`] and
    /// [`Tape::to_svg`]. Returns the tensor, so it chains: `x.matmul(w).sigmoid().named("H")`.
    /// Naming costs one small allocation and nothing afterwards.
    pub fn named(self, name: &str) -> Self {
        let mut inner = self.tape.inner.borrow_mut();
        inner.observed().names.push((self.id, name.into()));
        drop(inner);
        self
    }

    /// The name given with [`Tensor::named`], if any (the latest, if named twice).
    pub fn name(&self) -> Option<String> {
        name_of(self.tape.inner().names(), self.id).map(String::from)
    }
}

/// The latest name given to node `id`.
pub(crate) fn name_of(names: &[(NodeId, Box<str>)], id: NodeId) -> Option<&str> {
    names
        .iter()
        .rev()
        .find(|(n, _)| *n == id)
        .map(|(_, s)| &**s)
}

/// One equation of the backward pass ([`Tape::explain`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExplainLine {
    /// The equation: `dW2 = Hᵀ · O_delta`, or `dX += ...` for a further contribution to a
    /// value used more than once.
    pub equation: String,
    /// The shapes involved: `2×150 · 150×3 → 2×3` for a product, the gradient's shape for
    /// anything else.
    pub shapes: String,
    /// The op whose rule this is, as named in the rule table.
    pub op: &'static str,
    /// The caller's line of the forward op.
    pub location: &'static Location<'static>,
}

/// The backward pass of a tape as the matrix equations it executes, one line per
/// gradient contribution, in execution order ([`Tape::explain`]). `Display` prints one
/// line each: the equation, the shapes in brackets, the op and its caller's line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// The equations in the order backward runs them.
    pub lines: Vec<ExplainLine>,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = |s: &str| s.chars().count();
        let eq = self.lines.iter().map(|l| width(&l.equation)).max();
        let sh = self.lines.iter().map(|l| width(&l.shapes) + 2).max();
        for l in &self.lines {
            let pad_eq = eq.unwrap_or(0) - width(&l.equation);
            let pad_sh = sh.unwrap_or(0) - width(&l.shapes) - 2;
            // padded by hand: a format width must fit in 16 bits, a name need not
            f.write_str(&l.equation)?;
            spaces(f, pad_eq + 2)?;
            write!(f, "[{}]", l.shapes)?;
            spaces(f, pad_sh + 2)?;
            writeln!(f, "{} at {}:{}", l.op, l.location.file(), l.location.line())?;
        }
        Ok(())
    }
}

/// Writes `n` spaces.
fn spaces(f: &mut fmt::Formatter<'_>, mut n: usize) -> fmt::Result {
    const RUN: &str = "                                                                ";
    while n > 0 {
        let k = n.min(RUN.len());
        f.write_str(&RUN[..k])?;
        n -= k;
    }
    Ok(())
}

/// Ops whose input's gradient the textbook calls a delta: the error times the derivative
/// of an elementwise activation.
const ACTIVATIONS: &[&str] = &[
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "elu",
    "gelu",
    "gelu_tanh",
    "softplus",
    "silu",
];

impl<'t, F: Float> Tape<'t, F> {
    /// The backward pass from `root` as the matrix equations it will execute, in the
    /// notation of the textbook derivations: one line per gradient contribution, with
    /// the shapes and the caller's line of the forward op, in execution order. Tensors
    /// are called by their [`Tensor::named`] names, `T7` (node 7) otherwise; see the
    /// [module](crate::inspect) for the notation. Call it before `backward` (which
    /// releases the rules), or after one with `retain_graph`.
    ///
    /// ```
    /// use ndarray::Array2;
    /// use tapegrad::Tape;
    ///
    /// // Seed 001's network: H = σ(X·W1), O = σ(H·W2), backward from G = ∂L/∂O
    /// let (x, w1, w2) = (Array2::<f64>::zeros((150, 4)), Array2::zeros((4, 2)), Array2::zeros((2, 3)));
    /// let tape = Tape::new();
    /// let x_t = tape.constant(&x).named("X");
    /// let h = x_t.matmul(tape.param(&w1).named("W1")).sigmoid().named("H");
    /// let o = h.matmul(tape.param(&w2).named("W2")).sigmoid().named("O");
    /// let eqs: Vec<String> = tape.explain(o).unwrap().lines.into_iter().map(|l| l.equation).collect();
    /// assert_eq!(eqs, [
    ///     "O_delta = G ∘ O ∘ (1 − O)",
    ///     "dW2 = Hᵀ · O_delta",
    ///     "H_error = O_delta · W2ᵀ",
    ///     "H_delta = H_error ∘ H ∘ (1 − H)",
    ///     "dW1 = Xᵀ · H_delta",
    /// ]);
    /// ```
    ///
    /// # Errors
    ///
    /// `ForeignTensor` if `root` is from another tape, `NoGradient` if it depends on no
    /// tensor that requires a gradient, `BackwardTwice` if a backward without
    /// `retain_graph` already consumed the rules.
    #[track_caller]
    pub fn explain(&self, root: Tensor<'t, F>) -> Result<Explanation> {
        let location = Location::caller();
        let fail = |kind| Err(Error::new("explain", kind, location));
        if !std::ptr::eq(root.tape, self) {
            return fail(ErrorKind::ForeignTensor);
        }
        let inner = self.inner();
        if let Some(consumed) = inner.consumed {
            return Err(consumed.error("explain", location));
        }
        if !root.requires_grad {
            return fail(ErrorKind::NoGradient);
        }
        let nodes = &inner.nodes;
        let n = root.id + 1;
        // which nodes a gradient reaches, how many rules feed each, and the last of them
        let mut reached = vec![false; n];
        let mut uses = vec![0u32; n];
        let mut consumer = vec![0; n];
        reached[root.id] = true;
        for id in (0..n).rev() {
            if !reached[id] || nodes[id].rule.is_none() {
                continue;
            }
            for &i in inner.inputs_of(&nodes[id]) {
                if nodes[i].requires_grad {
                    reached[i] = true;
                    uses[i] += 1;
                    consumer[i] = id;
                }
            }
        }
        let names = inner.names();
        let value = |id: NodeId| name_of(names, id).map_or_else(|| format!("T{id}"), String::from);
        let grad = |id: NodeId| -> String {
            if id == root.id {
                return "G".into();
            }
            match name_of(names, id) {
                Some(name) if nodes[id].leaf => format!("d{name}"),
                Some(name) => format!("{name}_error"),
                None => {
                    let c = consumer[id];
                    match name_of(names, c) {
                        Some(out) if uses[id] == 1 && ACTIVATIONS.contains(&nodes[c].op) => {
                            format!("{out}_delta")
                        }
                        _ => format!("dT{id}"),
                    }
                }
            }
        };
        let mut assigned = vec![false; n];
        let mut lines = Vec::new();
        for id in (0..n).rev() {
            let node = &nodes[id];
            let Some(rule) = &node.rule else { continue };
            if !reached[id] {
                continue;
            }
            let inputs = inner.inputs_of(node);
            let param = match rule {
                Rule::Fn { param, .. } => param.to_f64(),
                _ => None,
            };
            // a custom op's name is the user's: never a built-in's equation
            let custom = match rule {
                Rule::Boxed(r) => r.is_custom(),
                Rule::FirstOrderOnly(_) => true,
                _ => false,
            };
            let terms = Terms {
                g: grad(id),
                y: value(id),
                x: inputs.iter().map(|&i| value(i)).collect(),
                shapes: inputs.iter().map(|&i| nodes[i].shape).collect(),
                out: node.shape,
                param,
            };
            let op = if custom { "" } else { node.op };
            for (k, rhs, shapes) in equations(op, node.op, &terms) {
                // (a template never names an input the op does not have; skip it if so)
                let Some(&i) = inputs.get(k) else { continue };
                if !nodes[i].requires_grad {
                    continue;
                }
                let sign = if assigned[i] { "+=" } else { "=" };
                assigned[i] = true;
                let (r, c) = nodes[i].shape;
                lines.push(ExplainLine {
                    equation: format!("{} {sign} {rhs}", grad(i)),
                    shapes: shapes.unwrap_or_else(|| format!("{r}×{c}")),
                    op: node.op,
                    location: node.location,
                });
            }
        }
        Ok(Explanation { lines })
    }
}

/// What an op's equations are written with.
struct Terms {
    /// The gradient of the op's output.
    g: String,
    /// The output's name.
    y: String,
    /// The inputs' names.
    x: Vec<String>,
    /// The inputs' shapes.
    shapes: Vec<(usize, usize)>,
    /// The output's shape.
    out: (usize, usize),
    /// The rule's scalar parameter, for rules that have one.
    param: Option<f64>,
}

/// `e` in parentheses if it is more than a name.
fn paren(e: &str) -> String {
    if e.contains(' ') {
        format!("({e})")
    } else {
        e.to_string()
    }
}

fn dims((r, c): (usize, usize)) -> String {
    format!("{r}×{c}")
}

/// The shapes of a product `a · b → c`.
fn product(a: (usize, usize), b: (usize, usize)) -> Option<String> {
    Some(format!("{} · {} → {}", dims(a), dims(b), dims((a.0, b.1))))
}

fn flip((r, c): (usize, usize)) -> (usize, usize) {
    (c, r)
}

impl Terms {
    /// `e`, an expression of the output's shape, summed back to input `k`'s shape.
    fn sum_to(&self, e: &str, k: usize) -> String {
        let to = self.shape(k);
        if to == self.out {
            e.to_string()
        } else if to == (1, 1) {
            format!("Σ {}", paren(e))
        } else if to.0 == 1 && to.1 == self.out.1 {
            format!("1ᵀ · {}", paren(e))
        } else if to.1 == 1 && to.0 == self.out.0 {
            format!("{} · 1", paren(e))
        } else {
            format!("sum_to({e})")
        }
    }

    /// Input `k`'s shape ((0, 0) past the last input).
    fn shape(&self, k: usize) -> (usize, usize) {
        self.shapes.get(k).copied().unwrap_or((0, 0))
    }

    /// The rule's parameter, or `symbol` when the rule keeps it elsewhere.
    fn p(&self, symbol: &str) -> String {
        self.param
            .map_or_else(|| symbol.to_string(), |p| format!("{p}"))
    }

    /// The number of elements of input `k`.
    fn len(&self, k: usize) -> usize {
        let (r, c) = self.shape(k);
        r * c
    }
}

/// The equations of the built-in op `op`'s rule: (input position, right-hand side, shapes
/// if not the gradient's), in the order the rule computes them; for any other op (`op`
/// empty, or unknown), `vjp_<name>(G)` per input.
fn equations(op: &str, name: &str, t: &Terms) -> Vec<(usize, String, Option<String>)> {
    let (g, y) = (&t.g, &t.y);
    let x = |k: usize| t.x.get(k).map_or("?", String::as_str);
    let one = |k: usize, e: String| vec![(k, e, None)];
    let each = |e: &dyn Fn(usize) -> String| (0..t.x.len()).map(|k| (k, e(k), None)).collect();
    match op {
        "matmul" | "linear" => {
            let (a, b) = (t.shape(0), t.shape(1));
            let mut v = Vec::new();
            if op == "linear" {
                v.push((2, format!("1ᵀ · {g}"), product((1, t.out.0), t.out)));
            }
            v.push((1, format!("{}ᵀ · {g}", x(0)), product(flip(a), t.out)));
            v.push((0, format!("{g} · {}ᵀ", x(1)), product(t.out, flip(b))));
            v
        }
        "add" | "add_row" | "add_col" | "broadcast_to" => each(&|k| t.sum_to(g, k)),
        "sub" => vec![
            (0, t.sum_to(g, 0), None),
            (1, format!("−{}", paren(&t.sum_to(g, 1))), None),
        ],
        "mul" => vec![
            (0, t.sum_to(&format!("{g} ∘ {}", x(1)), 0), None),
            (1, t.sum_to(&format!("{g} ∘ {}", x(0)), 1), None),
        ],
        "div" => vec![
            (0, t.sum_to(&format!("{g} / {}", x(1)), 0), None),
            (
                1,
                format!(
                    "−{}",
                    paren(&t.sum_to(&format!("({g} / {}) ∘ {y}", x(1)), 1))
                ),
                None,
            ),
        ],
        "neg" => one(0, format!("−{g}")),
        "add_scalar" => one(0, g.clone()),
        "mul_scalar" => one(0, format!("{}·{g}", t.p("s"))),
        "scalar_div" => one(0, format!("−({g} / {}) ∘ {y}", x(0))),
        "sum" | "sum_axis" => one(0, format!("broadcast({g})")),
        "mean" => one(0, format!("broadcast({g}) / {}", t.len(0))),
        "mean_axis" => {
            let n = t.len(0) / (t.out.0 * t.out.1).max(1);
            one(0, format!("broadcast({g}) / {n}"))
        }
        "max" | "min" | "max_axis" | "min_axis" => one(0, format!("{g} ∘ [{} = {y}] / ties", x(0))),
        "t" => one(0, format!("{g}ᵀ")),
        "reshape" => one(0, format!("reshape({g}, {})", dims(t.shape(0)))),
        "slice" => one(0, format!("embed({g})")),
        // the tensor forms of slice's and gather_rows's rules, recorded by Tape::grad
        "embed" => one(0, format!("{g}[rows, cols]")),
        "scatter_rows" => one(0, format!("gather_rows({g}, idx)")),
        "concat_rows" | "concat_cols" => {
            let mut at = 0;
            (0..t.x.len())
                .map(|k| {
                    let (r, c) = t.shape(k);
                    let e = if op == "concat_rows" {
                        format!("{g}[{at}..{}, :]", at + r)
                    } else {
                        format!("{g}[:, {at}..{}]", at + c)
                    };
                    at += if op == "concat_rows" { r } else { c };
                    (k, e, None)
                })
                .collect()
        }
        "gather_rows" => one(0, format!("scatter_add_rows({g})")),
        "sigmoid" => one(0, format!("{g} ∘ {y} ∘ (1 − {y})")),
        "tanh" => one(0, format!("{g} ∘ (1 − {y}²)")),
        "relu" => one(0, format!("{g} ∘ [{y} > 0]")),
        "leaky_relu" => one(0, format!("{g} ∘ (1 if {} > 0 else {})", x(0), t.p("α"))),
        "elu" => one(0, format!("{g} ∘ (1 if {y} > 0 else {y} + {})", t.p("α"))),
        "gelu" => one(0, format!("{g} ∘ (Φ({0}) + {0} ∘ φ({0}))", x(0))),
        "gelu_tanh" => one(0, format!("{g} ∘ gelu_tanh′({})", x(0))),
        "softplus" => one(0, format!("{g} ∘ σ({})", x(0))),
        "silu" => one(0, format!("{g} ∘ σ({0}) ∘ (1 + {0} ∘ (1 − σ({0})))", x(0))),
        "exp" => one(0, format!("{g} ∘ {y}")),
        "log" => one(0, format!("{g} / {}", x(0))),
        "sqrt" => one(0, format!("{g} / (2{y})")),
        "square" => one(0, format!("2·{g} ∘ {}", x(0))),
        "powi" | "powf" => {
            let p = t.p(if op == "powi" { "n" } else { "p" });
            one(0, format!("{p}·{g} ∘ {}^({p} − 1)", x(0)))
        }
        "recip" => one(0, format!("−{g} ∘ {y}²")),
        "abs" => one(0, format!("{g} ∘ sign({})", x(0))),
        "sin" => one(0, format!("{g} ∘ cos({})", x(0))),
        "cos" => one(0, format!("−{g} ∘ sin({})", x(0))),
        "erf" => one(0, format!("{g} ∘ (2/√π) exp(−{}²)", x(0))),
        "clamp" => one(0, format!("{g} ∘ [lo ≤ {} ≤ hi]", x(0))),
        "maximum" | "minimum" => {
            let cmp = if op == "maximum" { '>' } else { '<' };
            let (a, b) = (x(0), x(1));
            vec![
                (
                    0,
                    t.sum_to(&format!("{g} ∘ ([{a} {cmp} {b}] + [{a} = {b}]/2)"), 0),
                    None,
                ),
                (
                    1,
                    t.sum_to(&format!("{g} ∘ ([{b} {cmp} {a}] + [{a} = {b}]/2)"), 1),
                    None,
                ),
            ]
        }
        "where_" => vec![
            (0, t.sum_to(&format!("{g} ∘ M"), 0), None),
            (1, t.sum_to(&format!("{g} ∘ ¬M"), 1), None),
        ],
        "softmax" => one(0, format!("{y} ∘ ({g} − Σ_axis({g} ∘ {y}))")),
        "log_softmax" => one(0, format!("{g} − exp({y}) ∘ Σ_axis {g}")),
        "logsumexp" => one(0, format!("{g} ∘ softmax({})", x(0))),
        "layer_norm" => vec![
            (2, format!("1ᵀ · {g}"), None),
            (1, format!("1ᵀ · ({g} ∘ x̂)"), None),
            (
                0,
                format!("r ∘ (ĝ − mean ĝ − x̂ ∘ mean(ĝ ∘ x̂)), ĝ = {g} ∘ {}", x(1)),
                None,
            ),
        ],
        "mse_loss" | "l1_loss" | "huber_loss" => {
            let n = t.len(0);
            let (p, q) = (x(0), x(1));
            let d = match op {
                "mse_loss" => format!("2({p} − {q})"),
                "l1_loss" => format!("sign({p} − {q})"),
                _ => format!("clamp({p} − {q}, −δ, δ)"),
            };
            vec![
                (0, format!("{g}·{d} / {n}"), None),
                (1, format!("−{g}·{d} / {n}"), None),
            ]
        }
        "bce_with_logits" => {
            let n = t.len(0);
            vec![
                (0, format!("{g}·(σ({}) − {}) / {n}", x(0), x(1)), None),
                (1, format!("−{g}·{} / {n}", x(0)), None),
            ]
        }
        "softmax_cross_entropy" => {
            let m = t.shape(0).0;
            let (z, q) = (x(0), x(1));
            vec![
                (
                    0,
                    format!("{g}·(softmax({z}) ∘ rowsum({q}) − {q}) / {m}"),
                    None,
                ),
                (1, format!("−{g}·log_softmax({z}) / {m}"), None),
            ]
        }
        "softmax_cross_entropy_indices" => {
            let m = t.shape(0).0;
            one(0, format!("{g}·(softmax({}) − onehot(y)) / {m}", x(0)))
        }
        "nll_loss" => one(0, format!("−{g}·onehot(y) / {}", t.shape(0).0)),
        "dropout" => one(0, format!("{g} ∘ M / (1 − p)")),
        "remat" => each(&|k| format!("block′ᵀ({g}) for input {k}, the block run again")),
        "trace" => one(0, format!("{g}·I")),
        "diag" => one(0, format!("diag_embed({g})")),
        "diag_embed" => one(0, format!("diag({g})")),
        "tril" | "triu" => one(0, format!("{op}({g}, k)")),
        "inv" => one(0, format!("−{y}ᵀ · {g} · {y}ᵀ")),
        "solve" => {
            let a = x(0);
            vec![
                (0, format!("−({a}⁻ᵀ · {g}) · {y}ᵀ"), None),
                (1, format!("{a}⁻ᵀ · {g}"), None),
            ]
        }
        "solve_triangular" => {
            let a = x(0);
            let d = format!("op({a})⁻ᵀ · {g}");
            vec![
                (
                    0,
                    format!("−tri(D · {y}ᵀ), or −tri({y} · Dᵀ) if op({a}) = {a}ᵀ; D = {d}"),
                    None,
                ),
                (1, d, None),
            ]
        }
        "cho_solve" => {
            let l = x(0);
            let db = format!("({l}·{l}ᵀ)⁻¹ · {g}");
            vec![
                (0, format!("−tril((D·{y}ᵀ + {y}·Dᵀ)·{l}), D = {db}"), None),
                (1, db, None),
            ]
        }
        "det" => one(0, format!("{g}·{y}·{}⁻ᵀ", x(0))),
        "slogdet" | "logdet" => one(0, format!("{g}·{}⁻ᵀ", x(0))),
        "cholesky" => one(0, format!("½·{y}⁻ᵀ(P + Pᵀ){y}⁻¹, P = Φ({y}ᵀ · {g})")),
        "eigh" => one(
            0,
            format!("V·(diag(λ̄) + F ∘ K)·Vᵀ, [λ̄ V̄] = {g}, K = (Vᵀ·V̄ − V̄ᵀ·V)/2, Fᵢⱼ = 1/(λⱼ − λᵢ)"),
        ),
        // a custom op
        _ => each(&|k| format!("vjp_{name}({g}) for input {k}")),
    }
}
