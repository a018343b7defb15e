//! The gradient slots rules accumulate into during first-order backward ([`Ctx`]).
//!
//! Gradients accumulate, never overwrite: the first contribution to a slot is moved in
//! (no zero fill, no copy), later ones are added in place, and matmul contributions go
//! straight into an existing buffer through GEMM with beta = 1. Un-broadcasting happens
//! here, once, for every op ([`crate::kernels::sum_to_shape`]).

use ndarray::{Array2, ArrayView1, ArrayView2, Axis, Zip};

use crate::Float;
use crate::error::{Error, ErrorKind};
use crate::kernels::{self, broadcast_shape, gemm, gemm_acc, gemm_into, sum_to_shape, zip1};
use crate::tape::{Lane, Node, NodeId, Value, view_of};

/// What a rule sees during backward: the values it saved and the gradient slots of its
/// inputs, addressed by input position `k`.
pub(crate) struct Ctx<'a, 't, F: Float> {
    pub(crate) nodes: &'a [Node<F>],
    pub(crate) values: &'a [Value<F>],
    pub(crate) inputs: &'a [NodeId],
    pub(crate) output: NodeId,
    pub(crate) slots: &'a mut [Option<Array2<F>>],
    /// Buffers of an earlier step's gradients, by node id, to write first contributions
    /// into instead of allocating (`BackwardOptions::reuse`). Empty when none were given.
    pub(crate) spare: &'a mut [Option<Array2<F>>],
    /// The tape's lifetime, which borrowed values live for.
    pub(crate) tape: std::marker::PhantomData<&'t F>,
}

impl<'a, F: Float> Ctx<'a, '_, F> {
    /// The number of inputs.
    pub(crate) fn inputs(&self) -> usize {
        self.inputs.len()
    }

    /// Whether input `k` wants a gradient; a rule skips the work for inputs that do not.
    pub(crate) fn needs_grad(&self, k: usize) -> bool {
        self.nodes[self.inputs[k]].requires_grad
    }

    /// The shape of input `k`.
    pub(crate) fn input_shape(&self, k: usize) -> (usize, usize) {
        self.nodes[self.inputs[k]].shape
    }

    /// The value of input `k`. The op must have saved it ([`crate::tape::Saves`]).
    pub(crate) fn input(&self, k: usize) -> ArrayView2<'a, F> {
        self.saved(self.inputs[k])
    }

    /// The op's own output. The op must have saved it.
    pub(crate) fn output(&self) -> ArrayView2<'a, F> {
        self.saved(self.output)
    }

    fn saved(&self, id: NodeId) -> ArrayView2<'a, F> {
        let values: &'a [Value<F>] = self.values;
        match view_of(values, id) {
            Ok(v) => v,
            Err(_) => panic!(
                "tapegrad bug: the rule of `{}` read the value of node {id}, which it did not save",
                self.nodes[self.output].op
            ),
        }
    }

    fn slot(&mut self, k: usize) -> (&mut Option<Array2<F>>, (usize, usize)) {
        let id = self.inputs[k];
        (&mut self.slots[id], self.nodes[id].shape)
    }

    /// A spare buffer for input `k`'s first contribution, if one was handed in and the
    /// slot is still empty.
    pub(crate) fn spare(&mut self, k: usize) -> Option<Array2<F>> {
        let id = self.inputs[k];
        match self.slots[id] {
            None => self.spare.get_mut(id).and_then(Option::take),
            Some(_) => None,
        }
    }

    /// `dXₖ += d`, moving `d` in when it is the first contribution. `d` may have the
    /// output's broadcast shape; it is summed down to the input's shape.
    pub(crate) fn accumulate(&mut self, k: usize, d: Array2<F>) {
        let (slot, shape) = self.slot(k);
        let d = if d.dim() == shape {
            d
        } else {
            sum_to_shape(d.view(), shape)
        };
        match slot {
            Some(s) => {
                zip1(s.view_mut(), d.view(), |s, d| *s += d);
                crate::pool::recycle_array(d);
            }
            None => *slot = Some(d),
        }
    }

    /// `dXₖ += α·d`. `d` may be smaller than the input (a 1 × 1 or 1 × n gradient of a
    /// reduction, broadcast up) or larger (the output of a broadcasting op, summed down).
    pub(crate) fn accumulate_scaled(&mut self, k: usize, alpha: F, d: ArrayView2<'_, F>) {
        let shape = self.nodes[self.inputs[k]].shape;
        if d.dim() != shape && broadcast_shape(d.dim(), shape) != Some(shape) {
            let (slot, _) = self.slot(k);
            let mut d = sum_to_shape(d, shape);
            match slot {
                Some(s) => {
                    s.scaled_add(alpha, &d);
                    crate::pool::recycle_array(d);
                }
                None => {
                    if alpha != F::one() {
                        d.mapv_inplace(|v| alpha * v);
                    }
                    *slot = Some(d);
                }
            }
            return;
        }
        let spare = self.spare(k);
        let (slot, shape) = self.slot(k);
        match (slot, spare) {
            (Some(s), _) => s.scaled_add(alpha, &d),
            (slot @ None, Some(mut buf)) => {
                Zip::from(&mut buf)
                    .and_broadcast(&d)
                    .for_each(|b, &d| *b = alpha * d);
                *slot = Some(buf);
            }
            (slot @ None, None) => {
                let d = d.broadcast(shape).expect("checked above");
                *slot = Some(if alpha == F::one() {
                    kernels::copy(d)
                } else {
                    kernels::map(d, |v| alpha * v)
                });
            }
        }
    }

    /// The gradient buffer of input `k`, made (zeros, in a spare buffer if one was handed
    /// in) if this is the first contribution.
    fn buffer(&mut self, k: usize) -> &mut Array2<F> {
        let spare = self.spare(k);
        let (slot, shape) = self.slot(k);
        slot.get_or_insert_with(|| match spare {
            Some(mut b) => {
                b.fill(F::zero());
                b
            }
            None => Array2::zeros(shape),
        })
    }

    /// An error of `kind` naming this op and its line (a rule whose buffer the system
    /// refused).
    pub(crate) fn error(&self, kind: ErrorKind) -> Error {
        let node = &self.nodes[self.output];
        Error::new(node.op, kind, node.location)
    }

    /// `OutOfMemory` for the gradient of input `k`, naming this op and its line.
    pub(crate) fn out_of_memory(&self, k: usize) -> Error {
        self.error(ErrorKind::OutOfMemory {
            shape: self.input_shape(k),
        })
    }

    /// `diag(dXₖ) += d`, `d` with one element per diagonal element or one for all: in
    /// place into an existing slot, else into zeros from the allocator (`calloc`), whose
    /// pages off the diagonal are never touched. The gradient of `trace` and `diag`, which
    /// is zero off the diagonal. `Err` (`OutOfMemory`) if that buffer is refused.
    pub(crate) fn try_accumulate_diag(
        &mut self,
        k: usize,
        d: ArrayView1<'_, F>,
    ) -> Result<(), Error> {
        let spare = self.spare(k);
        let (slot, shape) = self.slot(k);
        if slot.is_none() {
            *slot = match spare {
                Some(mut b) => {
                    b.fill(F::zero());
                    Some(b)
                }
                None => kernels::calloc(shape),
            };
        }
        let Some(buf) = slot.as_mut() else {
            return Err(self.out_of_memory(k));
        };
        let mut diag = buf.diag_mut();
        let d = d
            .broadcast(diag.len())
            .expect("one element per diagonal element, or one for all");
        diag += &d;
        Ok(())
    }

    /// `dXₖ[rows, cols] += d`: a slice's gradient added into its region in place.
    pub(crate) fn accumulate_region(
        &mut self,
        k: usize,
        rows: Lane,
        cols: Lane,
        d: ArrayView2<'_, F>,
    ) {
        let mut region = self.buffer(k).view_mut();
        region.slice_axis_inplace(Axis(0), rows.slice());
        region.slice_axis_inplace(Axis(1), cols.slice());
        region += &d;
    }

    /// `dXₖ[indices[i]] += d[i]` for every `i`: a scatter-add of rows.
    pub(crate) fn accumulate_rows(&mut self, k: usize, indices: &[usize], d: ArrayView2<'_, F>) {
        let buf = self.buffer(k);
        for (i, &r) in indices.iter().enumerate() {
            let mut row = buf.row_mut(r);
            row += &d.row(i);
        }
    }

    /// `dXₖ += A·B`: GEMM with beta = 1 into the existing buffer; for the first
    /// contribution, beta = 0 into a spare buffer, or a new product.
    pub(crate) fn accumulate_gemm(&mut self, k: usize, a: ArrayView2<'_, F>, b: ArrayView2<'_, F>) {
        let spare = self.spare(k);
        let (slot, _) = self.slot(k);
        match (slot, spare) {
            (Some(c), _) => gemm_acc(a, b, c),
            (slot @ None, Some(mut c)) => {
                gemm_into(a, b, &mut c);
                *slot = Some(c);
            }
            (slot @ None, None) => *slot = Some(gemm(a, b)),
        }
    }

    /// `dXₖ += f(G, S)` elementwise in one fused pass, consuming `G`: `S` is a saved value
    /// that broadcasts to `G`'s shape. The first contribution is computed in place in `G`'s
    /// buffer and moved in; a contribution of the output's broadcast shape is summed down.
    pub(crate) fn accumulate_map(
        &mut self,
        k: usize,
        g: Array2<F>,
        s: ArrayView2<'_, F>,
        f: impl Fn(F, F) -> F,
    ) {
        self.accumulate_zip(k, Grad::Owned(g), s, f);
    }

    /// As [`Ctx::accumulate_map`], leaving `G` to the caller (for a rule that still needs
    /// it for another input).
    pub(crate) fn accumulate_map_view(
        &mut self,
        k: usize,
        g: ArrayView2<'_, F>,
        s: ArrayView2<'_, F>,
        f: impl Fn(F, F) -> F,
    ) {
        self.accumulate_zip(k, Grad::View(g), s, f);
    }

    fn accumulate_zip(
        &mut self,
        k: usize,
        g: Grad<'_, F>,
        s: ArrayView2<'_, F>,
        f: impl Fn(F, F) -> F,
    ) {
        let shape = self.nodes[self.inputs[k]].shape;
        let dim = g.view().dim();
        let s = s
            .broadcast(dim)
            .expect("a saved operand broadcasts to the output");
        if dim != shape {
            let mut d = kernels::pooled(dim);
            kernels::zip2(d.view_mut(), g.view(), s, |d, g, s| *d = f(g, s));
            if let Grad::Owned(g) = g {
                crate::pool::recycle_array(g);
            }
            return self.accumulate(k, d);
        }
        let spare = match g {
            Grad::View(_) => self.spare(k),
            Grad::Owned(_) => None,
        };
        let (slot, _) = self.slot(k);
        match (slot, g) {
            (Some(d), g) => {
                kernels::zip2(d.view_mut(), g.view(), s, |d, g, s| *d += f(g, s));
                if let Grad::Owned(g) = g {
                    crate::pool::recycle_array(g);
                }
            }
            (slot @ None, Grad::Owned(mut g)) => {
                zip1(g.view_mut(), s, |g, s| *g = f(*g, s));
                *slot = Some(g);
            }
            (slot @ None, Grad::View(g)) => {
                let mut d = match spare {
                    Some(d) => d,
                    None => kernels::pooled(dim),
                };
                kernels::zip2(d.view_mut(), g, s, |d, g, s| *d = f(g, s));
                *slot = Some(d);
            }
        }
    }
}

/// An upstream gradient a helper may consume or only read.
enum Grad<'a, F> {
    Owned(Array2<F>),
    View(ArrayView2<'a, F>),
}

impl<F> Grad<'_, F> {
    fn view(&self) -> ArrayView2<'_, F> {
        match self {
            Grad::Owned(g) => g.view(),
            Grad::View(g) => g.view(),
        }
    }
}
