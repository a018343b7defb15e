//! Errors are values: every fallible operation returns [`Error`], which names the op, says
//! what was wrong (both shapes, for a shape mismatch) and carries the caller's source line,
//! captured with `#[track_caller]`.

use std::fmt;
use std::panic::Location;

use crate::Missing;
use crate::kernels::broadcast_shape;

/// Shorthand for `Result<T, tapegrad::Error>`.
pub type Result<T> = std::result::Result<T, Error>;

/// An error from a tapegrad operation.
///
/// `Display` gives one line in ndarray's style, for example
/// `matmul: inputs 3 × 4 and 5 × 2 are not compatible (the columns of the left must equal
/// the rows of the right), called at src/main.rs:10:17`.
///
/// ```
/// use ndarray::Array2;
/// use tapegrad::{ErrorKind, Tape};
///
/// let tape = Tape::new();
/// let x = tape.constant(Array2::<f64>::zeros((3, 4)));
/// let w = tape.constant(Array2::<f64>::zeros((5, 2)));
/// let line = line!();
/// let err = x.try_matmul(w).unwrap_err();
/// assert_eq!(err.op(), "matmul");
/// assert!(matches!(err.kind(), ErrorKind::Shape { lhs: (3, 4), rhs: (5, 2), .. }));
/// assert_eq!(err.location().line(), line + 1);
/// assert!(err.to_string().starts_with("matmul: inputs 3 × 4 and 5 × 2 are not compatible"));
/// ```
///
/// `Debug` prints the same text as `Display`, so `unwrap()` and `fn main() -> Result`
/// show the whole message.
///
/// # Errors raised inside a model
///
/// When an op fails inside a layer that a container runs ([`Sequential`](crate::nn::Sequential),
/// [`mlp`](crate::nn::mlp), the attention layers, or a container of your own through
/// [`nn::forward_child`](crate::nn::forward_child)), the error also says which layer it
/// was (its path in the model, its type and its parameters) and where your code called
/// the model ([`Error::in_layer`], [`Error::call_site`]):
///
/// ```
/// use ndarray::Array2;
/// use rand::SeedableRng;
/// use tapegrad::nn::{Init, Linear, Module, Sequential, Tanh};
/// use tapegrad::Tape;
///
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// let model = Sequential::new()
///     .with(Linear::<f64>::new(4, 3, Init::Glorot, &mut rng))
///     .with(Tanh)
///     .with(Linear::new(5, 2, Init::Glorot, &mut rng)); // expects 5 inputs, gets 3
/// let tape = Tape::new();
/// let line = line!();
/// let err = model.forward(tape.constant(Array2::zeros((8, 4)))).unwrap_err();
/// let layer = err.in_layer().unwrap();
/// assert_eq!((layer.path.as_str(), layer.layer), ("2", "Linear"));
/// assert_eq!(layer.parameters, ["2.weight", "2.bias"]);
/// assert_eq!(err.call_site().line(), line + 1);
/// assert!(err.to_string().contains(
///     "in layer 2 (Linear, parameters 2.weight, 2.bias) of the Sequential called at"
/// ));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    op: &'static str,
    kind: ErrorKind,
    location: &'static Location<'static>,
    /// The layer it was raised in, when a container ran it (boxed: errors stay small).
    layer: Option<Box<InLayer>>,
}

/// The layer of a model an [`Error`] was raised in ([`Error::in_layer`]).
///
/// Containers add it as the error passes out of a layer they run; each container on the
/// way out prefixes the path and the parameter names with the layer's name in it, so
/// both read as the outermost model names them ([`Parameters`](crate::nn::Parameters)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct InLayer {
    /// The layer's path in the model: its name in each container from the outermost in,
    /// joined by dots (`"2"` for a `Sequential`'s third layer, `"1.attention.q"` deeper
    /// down).
    pub path: String,
    /// The type of the innermost layer ([`Module::name`](crate::nn::Module::name)), for
    /// example `"Linear"`.
    pub layer: &'static str,
    /// The innermost layer's parameters, by their names in the outermost model
    /// (`"2.weight"`, `"2.bias"`).
    pub parameters: Vec<String>,
    /// The type of the outermost container (`"Sequential"`).
    pub container: &'static str,
    /// Where the outermost container's forward pass was called: your line when you call
    /// it directly or through a generic `M: Module<F>`. Through a trait object (`&dyn
    /// Module<F>`, `Box<dyn Module<F>>`) Rust reports the line of the container's
    /// `forward` in its own source instead; then the path still tells the layer.
    pub called_at: &'static Location<'static>,
}

/// What went wrong; see [`Error`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The operand shapes do not fit the op; `rule` says what the op requires.
    Shape {
        /// Shape of the first operand (rows, columns).
        lhs: (usize, usize),
        /// Shape of the second operand (rows, columns).
        rhs: (usize, usize),
        /// The requirement that failed, in words.
        rule: &'static str,
    },
    /// The result would have more elements, or more bytes, than fit in `isize` (the
    /// most any allocation can hold).
    TooLarge {
        /// The requested shape.
        shape: (usize, usize),
    },
    /// The system refused the memory for the result (its size fits in `isize`, but not in
    /// this machine). Ops whose result can be larger than their inputs allocate fallibly
    /// and report this; others abort on a refused allocation, as Rust's collections do.
    OutOfMemory {
        /// The requested shape.
        shape: (usize, usize),
    },
    /// The op needs at least one element (`argmax` of an empty matrix).
    Empty {
        /// The shape found.
        shape: (usize, usize),
    },
    /// A slice's range does not fit its axis, or its step is 0.
    Slice {
        /// 0 for rows, 1 for columns.
        axis: usize,
        /// The range's start.
        start: usize,
        /// The range's end (exclusive).
        end: usize,
        /// The step.
        step: usize,
        /// The axis' length.
        len: usize,
    },
    /// An index is out of range (`gather_rows`).
    Index {
        /// Where in the list of indices.
        position: usize,
        /// The index given.
        index: usize,
        /// The length it must be below.
        len: usize,
    },
    /// A scalar parameter of the op is out of its range (a dropout probability above 1, a
    /// non-positive Huber δ).
    Parameter {
        /// The parameter's name.
        name: &'static str,
        /// The value given, as written by `Display`.
        value: String,
        /// What it must be.
        rule: &'static str,
    },
    /// Two `Gradients` combined by arithmetic do not hold the same parameters: one has a
    /// gradient of this shape that the other cannot be matched with (a parameter only one
    /// side borrowed, a different shape, or a gradient no array identifies).
    Unmatched {
        /// The shape of the gradient without a match.
        shape: (usize, usize),
    },
    /// Arrays given by parameter name (a direction for
    /// [`functional::model_hvp`](crate::functional::model_hvp) or
    /// [`functional::model_jvp`](crate::functional::model_jvp)) do not match the model's
    /// parameters: one is missing, named but not a parameter, or of another shape.
    Direction {
        /// The parameter's name.
        name: String,
        /// The parameter's shape (`None`: the model has no parameter of this name).
        expected: Option<(usize, usize)>,
        /// The shape given (`None`: nothing was given for this parameter).
        given: Option<(usize, usize)>,
    },
    /// An axis other than 0 (rows) or 1 (columns).
    Axis {
        /// The axis given.
        axis: usize,
    },
    /// A 1 × 1 tensor was needed (a loss for `backward`, or `item`).
    NotScalar {
        /// The shape found.
        shape: (usize, usize),
    },
    /// The seed given to backward does not have the root's shape.
    SeedShape {
        /// Shape of the root.
        root: (usize, usize),
        /// Shape of the seed.
        seed: (usize, usize),
    },
    /// The tensors come from different tapes.
    ForeignTensor,
    /// A value was released by a backward pass that did not retain the graph.
    Released {
        /// The op that produced the value.
        producer: &'static str,
        /// Where that op was called.
        created_at: &'static Location<'static>,
    },
    /// Backward already ran on this tape without `retain`.
    BackwardTwice {
        /// Where the first backward was called.
        first: &'static Location<'static>,
    },
    /// A backward pass on this tape stopped when a rule panicked (a custom op's VJP, a
    /// rematerialised block): the rules it had run are gone, so no later pass can be right.
    Interrupted {
        /// Where that backward was called.
        first: &'static Location<'static>,
        /// The op whose rule panicked.
        op: &'static str,
    },
    /// A custom op's VJP added a contribution that does not fit the input it names: it
    /// must have the input's shape, or the op's output shape when the input broadcasts to
    /// it (it is then summed down). Never zero-filled or broadcast.
    Contribution {
        /// The input the VJP added to, by position.
        input: usize,
        /// How many inputs the op has.
        inputs: usize,
        /// That input's shape (`None` when the op has no such input).
        expected: Option<(usize, usize)>,
        /// The op's output shape.
        output: (usize, usize),
        /// The contribution's shape.
        given: (usize, usize),
    },
    /// The root does not depend on any tensor that requires a gradient.
    NoGradient,
    /// A gradient reached the first-order VJP of an op whose rule is written on arrays
    /// only (a custom op without a tensor form): it cannot be differentiated again.
    NotDifferentiable,
    /// [`Gradients`](crate::Gradients) holds no gradient for the tensor or array asked
    /// about; the reason says why.
    Missing(Missing),
    /// A linear-algebra op needs a square matrix.
    NotSquare {
        /// The shape found.
        shape: (usize, usize),
    },
    /// The matrix is singular: LAPACK's LU (`getrf`) found `U[info, info] = 0` exactly
    /// (1-based; or, with the rows and columns scaled by powers of two, a pivot below the
    /// smallest normal number: singular to working precision by hundreds of orders of
    /// magnitude), or a triangular matrix has a zero on its diagonal at `info` (`trtrs`).
    Singular {
        /// The matrix's shape.
        shape: (usize, usize),
        /// LAPACK's `info`: the 1-based index of the zero pivot.
        info: i32,
    },
    /// A derivative that the op computes through `A⁻¹` is asked for where `A` is too close
    /// to singular for it: LAPACK's estimate of the reciprocal condition number of `A`
    /// (`gecon`, in the 1-norm, `rcond` = 1/κ₁), which multiplies the rounding errors of
    /// `A⁻¹` by up to 1/rcond, is at most `bound`. The derivative exists, but computed it
    /// would be noise: the derivatives of `det` of order 3 and more recorded by
    /// [`Tape::grad`](crate::Tape::grad) (`bound` = ε^¼; by `backward`, the third is exact);
    /// the derivatives of `inv`, `solve`, `slogdet` and `logdet` at a matrix singular to
    /// working precision (`bound` = ε, `A`'s rows and columns also scaled by powers of two:
    /// two equal columns, which LU's rounding can leave with a pivot of order ε·‖A‖).
    IllConditioned {
        /// The matrix's shape.
        shape: (usize, usize),
        /// LAPACK's estimate of 1/κ₁(A), as `Display` writes it.
        rcond: String,
        /// The bound it had to exceed, as `Display` writes it.
        bound: String,
    },
    /// A derivative of order two or more asked for through `eigh` of a matrix so small
    /// (largest entry below 2⁻¹⁰²³ in f64, 2⁻¹²⁷ in f32: subnormal) that its rules work on
    /// `2ˢ·A` and must scale back by a `2ˢ` that no float holds: computed, the cotangents
    /// that meet `2ˢ` would overflow before meeting the zeros they cancel against, and
    /// give NaN where the true value is 0 or overflows. The first derivative (by
    /// `backward` or [`Tape::grad`](crate::Tape::grad)) is computed; differentiate the
    /// eigendecomposition of `2ᵏ·A` instead (the same vectors, eigenvalues `2ᵏ·λ`).
    Subnormal {
        /// The matrix's shape.
        shape: (usize, usize),
        /// The `s` of `2ˢ`.
        exponent: i32,
    },
    /// The matrix is not positive definite: LAPACK's Cholesky (`potrf`) found the leading
    /// minor of order `info` not positive.
    NotPositiveDefinite {
        /// The matrix's shape.
        shape: (usize, usize),
        /// LAPACK's `info`: the order of the leading minor that is not positive.
        info: i32,
    },
    /// The input holds NaN or an infinity, which LAPACK would turn into garbage.
    NotFinite {
        /// The input's shape.
        shape: (usize, usize),
    },
    /// Another LAPACK failure (an eigenvalue iteration that did not converge); `info` is
    /// LAPACK's.
    Lapack {
        /// The LAPACK routine, without its type prefix (`syev`).
        routine: &'static str,
        /// LAPACK's `info`.
        info: i32,
    },
    /// The number of class indices differs from the number of rows of the logits.
    TargetCount {
        /// Rows of the logits.
        rows: usize,
        /// Class indices given.
        targets: usize,
    },
    /// A class index is not below the number of classes.
    ClassIndex {
        /// The row holding the bad index.
        row: usize,
        /// The index given.
        index: usize,
        /// The number of classes (columns of the logits).
        classes: usize,
    },
    /// An MPI call failed ([`crate::parallel`]'s `mpi` module): the routine and MPI's
    /// error code.
    Mpi {
        /// The MPI routine.
        routine: &'static str,
        /// The code it returned.
        code: i32,
    },
    /// The MPI library is not one whose `MPI_IN_PLACE` tapegrad knows (Open MPI and the
    /// MPICH family: MPICH, Intel MPI, MVAPICH), so it cannot reduce gradients in place.
    MpiLibrary {
        /// The library's version string.
        version: String,
    },
    /// Anomaly detection ([`Tape::detect_anomaly`](crate::Tape::detect_anomaly)) found NaN
    /// or an infinity produced from finite operands: in an op's forward value, or in a
    /// gradient its rule computed in backward. The error's op and location are that op's
    /// and its caller's line in the forward pass.
    Anomaly {
        /// Where it was found.
        site: AnomalySite,
        /// The shape of the array holding it.
        shape: (usize, usize),
        /// Row and column of its first non-finite element.
        position: (usize, usize),
        /// That element.
        value: NonFinite,
    },
    // -- drawing the tape (Tape::to_svg) --
    /// [`Tape::to_svg`](crate::Tape::to_svg) does not lay out a graph this large: past
    /// [`SVG_MAX_NODES`](crate::inspect::SVG_MAX_NODES) nodes, or with a layered drawing
    /// that `layout-rs` would take long over. Render [`Tape::to_dot`](crate::Tape::to_dot)
    /// with Graphviz instead.
    DrawingTooLarge {
        /// The graph's nodes.
        nodes: usize,
        /// What is too large, in words.
        reason: &'static str,
    },
    /// `layout-rs` failed (panicked) on this graph with both of its placements;
    /// [`Tape::to_dot`](crate::Tape::to_dot) still works.
    Layout {
        /// Its panic message.
        message: String,
    },
}

/// Where anomaly detection found a non-finite number ([`ErrorKind::Anomaly`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnomalySite {
    /// The op's result in the forward pass.
    Forward,
    /// The data put on the tape as a leaf.
    Leaf,
    /// The gradient the op's rule computed for its input `input` (0-based) in backward.
    Gradient {
        /// The input's position.
        input: usize,
    },
    /// The seed given to backward.
    Seed,
}

/// A non-finite number ([`ErrorKind::Anomaly`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonFinite {
    /// Not a number.
    NaN,
    /// +∞.
    Infinity,
    /// −∞.
    NegInfinity,
}

impl Error {
    /// A new error for `op` of the given kind, at `location`.
    pub(crate) fn new(
        op: &'static str,
        kind: ErrorKind,
        location: &'static Location<'static>,
    ) -> Self {
        Error {
            op,
            kind,
            location,
            layer: None,
        }
    }

    /// The operation that failed, as named in the rule table (`"matmul"`, `"backward"`, ...).
    pub fn op(&self) -> &'static str {
        self.op
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// The caller's source location: the line that called the op that failed (inside
    /// a library layer, that layer's source; see [`Error::call_site`] for yours).
    pub fn location(&self) -> &'static Location<'static> {
        self.location
    }

    /// The layer the error was raised in, when a container ran it: its path in the
    /// model, its type, its parameters and where the model was called ([`InLayer`]).
    /// `None` for an op called outside any container.
    pub fn in_layer(&self) -> Option<&InLayer> {
        self.layer.as_deref()
    }

    /// Where your code called into tapegrad: the call of the outermost container's
    /// forward pass for an error raised inside a model ([`InLayer::called_at`]), else
    /// the op's caller ([`Error::location`]).
    pub fn call_site(&self) -> &'static Location<'static> {
        self.layer.as_ref().map_or(self.location, |l| l.called_at)
    }

    /// The error as it passes out of layer `name` (of type `layer`, with the parameters
    /// `parameters` gives) of a `container` whose forward was called at `called_at`.
    #[cold]
    pub(crate) fn within(
        mut self,
        container: &'static str,
        name: &str,
        layer: &'static str,
        parameters: impl FnOnce() -> Vec<String>,
        called_at: &'static Location<'static>,
    ) -> Self {
        self.layer = Some(Box::new(match self.layer.take() {
            None => InLayer {
                path: name.to_string(),
                layer,
                parameters: parameters()
                    .into_iter()
                    .map(|p| format!("{name}.{p}"))
                    .collect(),
                container,
                called_at,
            },
            Some(inner) => InLayer {
                path: format!("{name}.{}", inner.path),
                parameters: inner
                    .parameters
                    .iter()
                    .map(|p| format!("{name}.{p}"))
                    .collect(),
                container,
                called_at,
                ..*inner
            },
        }));
        self
    }
}

fn dims(f: &mut fmt::Formatter<'_>, (r, c): (usize, usize)) -> fmt::Result {
    write!(f, "{r} × {c}")
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Shape { lhs, rhs, rule } => {
                f.write_str("inputs ")?;
                dims(f, *lhs)?;
                f.write_str(" and ")?;
                dims(f, *rhs)?;
                write!(f, " are not compatible ({rule})")
            }
            ErrorKind::TooLarge { shape } => {
                f.write_str("the result shape ")?;
                dims(f, *shape)?;
                f.write_str(" has more bytes than any allocation can hold")
            }
            ErrorKind::OutOfMemory { shape } => {
                f.write_str("the system refused the memory for a result of shape ")?;
                dims(f, *shape)
            }
            ErrorKind::Empty { shape } => {
                f.write_str("needs at least one element, got a ")?;
                dims(f, *shape)?;
                f.write_str(" matrix")
            }
            ErrorKind::Slice {
                axis,
                start,
                end,
                step,
                len,
            } => {
                let name = if *axis == 0 { "rows" } else { "columns" };
                write!(
                    f,
                    "{name} {start}..{end} with step {step} do not fit {len} {name} (the range \
                     must end within the axis, start at or before its end, and step by at \
                     least 1)"
                )
            }
            ErrorKind::Index {
                position,
                index,
                len,
            } => write!(
                f,
                "index {index} (at position {position}) is out of range for {len} rows"
            ),
            ErrorKind::Parameter { name, value, rule } => {
                write!(f, "parameter {name} = {value} {rule}")
            }
            ErrorKind::Unmatched { shape: (r, c) } => write!(
                f,
                "the {r} × {c} gradient has no counterpart in the other Gradients (both \
                 must hold the gradients of the same borrowed parameters)"
            ),
            ErrorKind::Direction {
                name,
                expected,
                given,
            } => match (expected, given) {
                (None, _) => write!(
                    f,
                    "the direction names \"{name}\", which is not a parameter of the model"
                ),
                (Some((r, c)), None) => write!(
                    f,
                    "the direction has nothing for parameter \"{name}\" ({r} × {c}); give \
                     an array for every parameter (zeros for those that stay fixed)"
                ),
                (Some((r, c)), Some((gr, gc))) => write!(
                    f,
                    "the direction of parameter \"{name}\" is {gr} × {gc}, the parameter \
                     {r} × {c}"
                ),
            },
            ErrorKind::Axis { axis } => {
                write!(
                    f,
                    "axis {axis} is out of range for a matrix (0 = rows, 1 = columns)"
                )
            }
            ErrorKind::NotScalar { shape } => {
                f.write_str("needs a 1 × 1 tensor, got ")?;
                dims(f, *shape)
            }
            ErrorKind::SeedShape { root, seed } => {
                f.write_str("seed ")?;
                dims(f, *seed)?;
                f.write_str(" does not have the root's shape ")?;
                dims(f, *root)
            }
            ErrorKind::ForeignTensor => f.write_str("the tensors belong to different tapes"),
            ErrorKind::Released {
                producer,
                created_at,
            } => write!(
                f,
                "the value of `{producer}` (created at {created_at}) was released by a backward \
                 pass; read values before backward, or pass \
                 BackwardOptions::new().retain_graph(true)"
            ),
            ErrorKind::BackwardTwice { first } => write!(
                f,
                "the tape was consumed by the backward pass called at {first}; pass \
                 BackwardOptions::new().retain_graph(true) to run backward more than once"
            ),
            ErrorKind::Interrupted { first, op } => write!(
                f,
                "the backward pass called at {first} stopped when the rule of `{op}` \
                 panicked, and the rules it had run are gone; record the step again on a \
                 new tape"
            ),
            ErrorKind::Contribution {
                input,
                inputs,
                expected,
                output,
                given,
            } => match expected {
                None => write!(
                    f,
                    "the VJP added a gradient for input {input}, but the op has {inputs} \
                     input(s)"
                ),
                Some(expected) => {
                    write!(f, "the VJP's contribution to input {input} is ")?;
                    dims(f, *given)?;
                    f.write_str("; it must have the input's shape, ")?;
                    dims(f, *expected)?;
                    if expected != output && broadcast_shape(*expected, *output) == Some(*output) {
                        f.write_str(", or the output's, ")?;
                        dims(f, *output)?;
                        f.write_str(", which the input broadcasts to")?;
                    }
                    Ok(())
                }
            },
            ErrorKind::NoGradient => {
                f.write_str("the root does not depend on any tensor that requires a gradient")
            }
            ErrorKind::Missing(reason) => write!(f, "no gradient: {reason}"),
            ErrorKind::NotDifferentiable => f.write_str(
                "its VJP is written on arrays, which gives first derivatives only; write it \
                 in tensor ops too (CustomOp::vjp_tensor) to differentiate through it again",
            ),
            ErrorKind::NotSquare { shape } => {
                f.write_str("needs a square matrix, got ")?;
                dims(f, *shape)
            }
            ErrorKind::Singular { shape, info } => {
                f.write_str("the ")?;
                dims(f, *shape)?;
                write!(
                    f,
                    " matrix is singular (LAPACK info = {info}: pivot {info} is zero)"
                )
            }
            ErrorKind::IllConditioned {
                shape,
                rcond,
                bound,
            } => {
                f.write_str("the ")?;
                dims(f, *shape)?;
                write!(
                    f,
                    " matrix is singular to working precision for this derivative (LAPACK's \
                     estimate of its reciprocal condition number is {rcond}, at most {bound}): \
                     computed, it would be rounding noise"
                )
            }
            ErrorKind::Subnormal { shape, exponent } => {
                f.write_str("the ")?;
                dims(f, *shape)?;
                write!(
                    f,
                    " matrix is subnormal: its derivatives of order two and more would be \
                     scaled back by 2^{exponent}, past the largest float, and be NaN where \
                     they are 0 or overflow; differentiate the op at 2^k·A instead"
                )
            }
            ErrorKind::NotPositiveDefinite { shape, info } => {
                f.write_str("the ")?;
                dims(f, *shape)?;
                write!(
                    f,
                    " matrix is not positive definite (LAPACK info = {info}: the leading \
                     minor of order {info} is not positive)"
                )
            }
            ErrorKind::NotFinite { shape } => {
                f.write_str("the ")?;
                dims(f, *shape)?;
                f.write_str(" input holds NaN or an infinity")
            }
            ErrorKind::Lapack { routine, info } => {
                write!(f, "LAPACK's {routine} failed with info = {info}")
            }
            ErrorKind::TargetCount { rows, targets } => {
                write!(f, "{targets} class indices given for {rows} rows of logits")
            }
            ErrorKind::ClassIndex {
                row,
                index,
                classes,
            } => {
                write!(
                    f,
                    "row {row}: class index {index} is out of range for {classes} classes"
                )
            }
            ErrorKind::Mpi { routine, code } => {
                write!(f, "{routine} failed with MPI error code {code}")
            }
            ErrorKind::MpiLibrary { version } => write!(
                f,
                "the MPI library ({version}) is neither Open MPI nor of the MPICH family, \
                 whose MPI_IN_PLACE tapegrad knows"
            ),
            ErrorKind::Anomaly {
                site,
                shape,
                position: (i, j),
                value,
            } => {
                let value = match value {
                    NonFinite::NaN => "NaN",
                    NonFinite::Infinity => "+inf",
                    NonFinite::NegInfinity => "-inf",
                };
                match site {
                    AnomalySite::Forward => {
                        f.write_str("anomaly in the forward pass: the result (")?
                    }
                    AnomalySite::Gradient { input } => write!(
                        f,
                        "anomaly in the backward pass: the rule's gradient for input {input} ("
                    )?,
                    AnomalySite::Seed => f.write_str("anomaly in the backward pass: the seed (")?,
                    AnomalySite::Leaf => f.write_str("anomaly in the data put on the tape (")?,
                }
                dims(f, *shape)?;
                write!(f, ") holds {value} at [{i}, {j}]")?;
                match site {
                    AnomalySite::Forward => f.write_str(", computed from finite inputs"),
                    AnomalySite::Gradient { .. } => {
                        f.write_str(", computed from a finite gradient and finite values")
                    }
                    AnomalySite::Seed | AnomalySite::Leaf => Ok(()),
                }
            }
            ErrorKind::DrawingTooLarge { nodes, reason } => write!(
                f,
                "the graph of {nodes} nodes is too large to lay out ({reason}); render \
                 Tape::to_dot with Graphviz instead"
            ),
            ErrorKind::Layout { message } => write!(
                f,
                "layout-rs failed on this graph ({message}); Tape::to_dot still works"
            ),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}, called at {}", self.op, self.kind, self.location)?;
        if let Some(l) = &self.layer {
            write!(f, ", in layer {} ({}", l.path, l.layer)?;
            // (a block of many layers: its first few parameters say enough)
            const SHOWN: usize = 4;
            for (i, p) in l.parameters.iter().take(SHOWN).enumerate() {
                f.write_str(if i == 0 { ", parameters " } else { ", " })?;
                f.write_str(p)?;
            }
            if l.parameters.len() > SHOWN {
                write!(f, " and {} more", l.parameters.len() - SHOWN)?;
            }
            write!(f, ") of the {} called at {}", l.container, l.called_at)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Error {}

/// The panicking shorthand of every `try_` op: the `Display` of the error, reported at the
/// caller's location.
#[track_caller]
pub(crate) fn or_panic<T>(r: Result<T>) -> T {
    match r {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    }
}

/// A shape error for `op`: `lhs` and `rhs` do not satisfy `rule`.
pub(crate) fn shape_error(
    op: &'static str,
    lhs: (usize, usize),
    rhs: (usize, usize),
    rule: &'static str,
    location: &'static Location<'static>,
) -> Error {
    Error::new(op, ErrorKind::Shape { lhs, rhs, rule }, location)
}

/// `TooLarge` unless an `F` matrix of `shape` fits in one allocation: its element count
/// and its size in bytes must fit in `isize`. Every op that makes a new shape checks it.
pub(crate) fn check_size<F>(
    op: &'static str,
    shape: (usize, usize),
    location: &'static Location<'static>,
) -> Result<(usize, usize)> {
    let fits = shape
        .0
        .checked_mul(shape.1)
        .and_then(|n| n.checked_mul(std::mem::size_of::<F>()))
        .is_some_and(|bytes| bytes <= isize::MAX as usize);
    if fits {
        Ok(shape)
    } else {
        Err(Error::new(op, ErrorKind::TooLarge { shape }, location))
    }
}

/// The value an op computed, with a refused allocation turned into `OutOfMemory` for `op`
/// (`value` is `Err(lost)` when an input was released; see `Tape::record`).
pub(crate) fn allocated<T, L>(
    value: std::result::Result<Option<T>, L>,
    op: &'static str,
    shape: (usize, usize),
    location: &'static Location<'static>,
) -> Result<std::result::Result<T, L>> {
    match value {
        Ok(Some(t)) => Ok(Ok(t)),
        Ok(None) => Err(Error::new(op, ErrorKind::OutOfMemory { shape }, location)),
        Err(lost) => Ok(Err(lost)),
    }
}
