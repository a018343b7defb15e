//! Seeing what a tape does.
//!
//! - **Explain mode**: [`Tape::explain`] prints the backward pass as the matrix equations
//!   it executes, in the notation of the textbook derivations (`O_delta = G ∘ O ∘ (1 − O)`,
//!   `dW2 = Hᵀ · O_delta  [2×150 · 150×3 → 2×3]`), with names given by
//!   [`Tensor::named`](crate::Tensor::named).
//! - **Graph export**: [`Tape::to_dot`] (Graphviz DOT, any size) and [`Tape::to_svg`]
//!   (an SVG drawn in Rust, no Graphviz needed, for graphs of up to [`SVG_MAX_NODES`]
//!   nodes whose drawing stays small).
//! - **Anomaly detection**: [`Tape::detect_anomaly`] checks every forward value and every
//!   gradient for NaN and infinity as they are produced, and reports the first op that
//!   made one from finite operands ([`ErrorKind::Anomaly`]).
//! - **Profile**: [`profile::start`] and [`profile::finish`] time every op by kind and
//!   call site, forward and backward, with calls and bytes, and the tape's own overhead.
//! - **What got no gradient**: [`Parameters::without_gradient`](crate::nn::Parameters::without_gradient)
//!   and [`Gradients::reason`](crate::Gradients::reason).
//!
//! Anomaly detection and profiling are off by default and cost a tape nothing then: one
//! flag test per recorded op and per rule run in backward.

use std::time::{Duration, Instant};

use ndarray::{Array2, ArrayView2};

use crate::error::{AnomalySite, Error, ErrorKind, NonFinite, Result};
use crate::grad::Ctx;
use crate::nn::{ChildName, Module};
use crate::rule::Rule;
use crate::tape::{NodeId, Observed, Value};
use crate::{Float, Tape};

mod dot;
mod explain;
pub mod profile;
mod svg;

pub(crate) use explain::name_of;
pub use explain::{ExplainLine, Explanation};
pub use profile::{Profile, SiteStats};
pub use svg::SVG_MAX_NODES;

/// Mode bit: check values and gradients for NaN and infinity.
pub(crate) const ANOMALY: u8 = 1;
/// Mode bit: time ops for [`profile`].
pub(crate) const PROFILE: u8 = 2;

/// A layer's forward pass while profiling ([`Tape::enter_layer`]): dropping it returns
/// the tape to the enclosing layer.
pub(crate) struct LayerScope<'a, 't, F: Float> {
    tape: &'a Tape<'t, F>,
    previous: u32,
}

impl<F: Float> Drop for LayerScope<'_, '_, F> {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.tape.inner.try_borrow_mut() {
            inner.observed().layer = self.previous;
        }
    }
}

impl<'t, F: Float> Tape<'t, F> {
    /// Switches anomaly detection on or off for this tape (PyTorch's anomaly mode, JAX's
    /// `debug_nans`). When on, every value an op records is checked for NaN and infinity
    /// as it is produced, and so is every gradient a rule computes in backward; the first
    /// op that produced one from finite operands is reported as an
    /// [`ErrorKind::Anomaly`] naming the op, its caller's line, the input or gradient,
    /// and the position. A forward anomaly is kept and returned by [`Tape::anomaly`] and
    /// by `backward` (which then runs nothing); a backward anomaly stops backward with it.
    ///
    /// Switch it on before recording: values recorded earlier are not checked. Off by
    /// default; when off it costs a flag test per op. When on, every element is read once
    /// more.
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::{AnomalySite, ErrorKind, Tape};
    ///
    /// let tape = Tape::new();
    /// tape.detect_anomaly(true);
    /// let x = tape.param(array![[1.0, 0.0]]);
    /// let y = x.log(); // ln 0 = −∞
    /// let err = tape.backward(y.sum()).unwrap_err();
    /// assert_eq!(err.op(), "log");
    /// assert!(matches!(err.kind(), ErrorKind::Anomaly { site: AnomalySite::Forward, position: (0, 1), .. }));
    /// ```
    pub fn detect_anomaly(&self, on: bool) {
        let modes = self.modes.get();
        self.modes.set(if on {
            modes | ANOMALY
        } else {
            modes & !ANOMALY
        });
    }

    /// The first NaN or infinity anomaly detection found in the forward pass so far
    /// ([`Tape::detect_anomaly`]), if any.
    pub fn anomaly(&self) -> Option<Error> {
        let inner = self.inner();
        inner.observed.as_ref().and_then(|o| o.anomaly.clone())
    }

    /// A tape that neither profiles nor checks for anomalies, whatever this thread's
    /// profiler: the inner tapes of a rematerialised block, whose time is its op's.
    pub(crate) fn unobserved() -> Self {
        let tape = Self::new();
        tape.modes.set(0);
        tape
    }

    /// The time now if this tape profiles, else `None`: the start of a record.
    #[inline]
    pub(crate) fn stamp(&self) -> Option<Instant> {
        if self.modes.get() & PROFILE != 0 {
            Some(Instant::now())
        } else {
            None
        }
    }

    /// With the observation modes on, after node `id` was recorded (the record started
    /// at `stamp`): its value checked for anomalies, the op timed for the profile.
    #[cold]
    #[inline(never)]
    pub(crate) fn observe_record(&self, id: NodeId, stamp: Option<Instant>) {
        if self.modes.get() & ANOMALY != 0 {
            self.check_forward(id);
        }
        let Some(start) = stamp else { return };
        let mut inner = self.inner.borrow_mut();
        let node = &inner.nodes[id];
        let (op, location, leaf) = (node.op, node.location, node.leaf);
        let bytes = match &inner.values[id] {
            Value::Owned(a) => a.0.len() * std::mem::size_of::<F>(),
            _ => 0,
        };
        let observed = inner.observed();
        let end = Instant::now();
        // an op's time: from the end of the previous record to the start of this one
        // (a leaf starts the clock: the time before it is the caller's)
        let op_time = match observed.last_record {
            Some(last) if !leaf => start.saturating_duration_since(last),
            _ => Duration::ZERO,
        };
        observed.last_record = Some(end);
        let layer = observed.layer;
        if layer != 0 {
            observed.node_layers.push((id, layer));
        }
        profile::forward(op, location, layer, op_time, end - start, bytes);
    }

    /// Enters the forward pass of layer `name` (a child of the layer running now) while
    /// profiling: the ops recorded until the scope is dropped are attributed to it. Not
    /// profiling, it does nothing (one flag test).
    #[inline]
    pub(crate) fn enter_layer<M: Module<F> + ?Sized>(
        &self,
        name: ChildName<'_>,
        child: &M,
    ) -> Option<LayerScope<'_, 't, F>> {
        if self.modes.get() & PROFILE == 0 {
            return None;
        }
        Some(self.enter_profiled_layer(name, child.name()))
    }

    #[cold]
    #[inline(never)]
    fn enter_profiled_layer(
        &self,
        name: ChildName<'_>,
        layer: &'static str,
    ) -> LayerScope<'_, 't, F> {
        let mut inner = self.inner.borrow_mut();
        let observed = inner.observed();
        let previous = observed.layer;
        observed.layer = name.with(|name| profile::enter_layer(previous, name, layer));
        LayerScope {
            tape: self,
            previous,
        }
    }

    /// Keeps the first forward anomaly: node `id`'s value if it holds NaN or infinity.
    fn check_forward(&self, id: NodeId) {
        let mut inner = self.inner.borrow_mut();
        if inner.observed.as_ref().is_some_and(|o| o.anomaly.is_some()) {
            return;
        }
        let node = &inner.nodes[id];
        let site = if node.leaf {
            AnomalySite::Leaf
        } else {
            AnomalySite::Forward
        };
        let found = match &inner.values[id] {
            Value::Owned(a) => anomaly_in(a.0.view(), site),
            v @ Value::Borrowed(_) => anomaly_in(v.borrowed().expect("a borrowed value"), site),
            // a view of a value already checked, or nothing computed
            Value::Alias { .. } | Value::Released(_) => None,
        };
        if let Some(kind) = found {
            let error = Error::new(node.op, kind, node.location);
            inner.observed().anomaly = Some(error);
        }
    }
}

/// The anomaly at `site` if `a` holds NaN or an infinity: its first such element, in
/// row-major order.
fn anomaly_in<F: Float>(a: ArrayView2<'_, F>, site: AnomalySite) -> Option<ErrorKind> {
    let (position, &x) = a.indexed_iter().find(|(_, x)| !x.is_finite())?;
    let value = if x.is_nan() {
        NonFinite::NaN
    } else if x > F::zero() {
        NonFinite::Infinity
    } else {
        NonFinite::NegInfinity
    };
    Some(ErrorKind::Anomaly {
        site,
        shape: a.dim(),
        position,
        value,
    })
}

/// The backward seed's anomaly, if it holds NaN or infinity.
pub(crate) fn check_seed<F: Float>(
    seed: &Array2<F>,
    location: &'static std::panic::Location<'static>,
) -> Result<()> {
    match anomaly_in(seed.view(), AnomalySite::Seed) {
        Some(kind) => Err(Error::new("backward", kind, location)),
        None => Ok(()),
    }
}

/// Runs node `ctx.output`'s rule with the observation modes on: timed and its new
/// gradient buffers counted for the profile, the gradients it wrote checked for
/// anomalies. `rules` accumulates the time spent in rules.
#[cold]
#[inline(never)]
pub(crate) fn run_observed<F: Float>(
    modes: u8,
    rule: &Rule<F>,
    g: Array2<F>,
    ctx: &mut Ctx<'_, '_, F>,
    location: &'static std::panic::Location<'static>,
    observed: Option<&Observed>,
    rules: &mut Duration,
) -> Result<()> {
    let inputs = ctx.inputs;
    let id = ctx.output;
    let was_empty: Vec<bool> = inputs.iter().map(|&i| ctx.slots[i].is_none()).collect();
    let start = Instant::now();
    rule.run(g, ctx, location)?;
    let time = start.elapsed();
    *rules += time;
    let node = &ctx.nodes[id];
    if modes & PROFILE != 0 {
        let bytes: usize = (0..inputs.len())
            .filter(|&k| was_empty[k] && !inputs[..k].contains(&inputs[k]))
            .filter_map(|k| ctx.slots[inputs[k]].as_ref())
            .map(|g| g.len() * std::mem::size_of::<F>())
            .sum();
        let layer = observed.map_or(0, |o| o.layer_of(id));
        profile::backward(node.op, node.location, layer, time, bytes);
    }
    if modes & ANOMALY != 0 {
        for (k, &i) in inputs.iter().enumerate() {
            let Some(g) = &ctx.slots[i] else { continue };
            if let Some(kind) = anomaly_in(g.view(), AnomalySite::Gradient { input: k }) {
                return Err(Error::new(node.op, kind, node.location));
            }
        }
    }
    Ok(())
}
