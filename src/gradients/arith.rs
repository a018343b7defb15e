//! Arithmetic on [`Gradients`], for reductions over shards of a batch: `self ← α·other`,
//! `self += α·other` and `self ← α·self`, parameter by parameter, in place.
//!
//! Two `Gradients` from different tapes (one per shard, or one per process) are matched
//! by parameter storage, the way [`Gradients::wrt`] finds a parameter: both passes must
//! have borrowed the same arrays with [`Tape::param`](crate::Tape::param). Gradients that
//! no array identifies (of an owned leaf, or a retained intermediate) cannot be matched
//! across tapes and make the operation fail, as does a parameter only one side has.

use std::panic::Location;

use ndarray::Zip;

use super::Gradients;
use crate::Float;
use crate::error::{Error, ErrorKind, Result};

impl<F: Float> Gradients<F> {
    /// `self += α·other`, parameter by parameter.
    ///
    /// ```
    /// use ndarray::array;
    /// use tapegrad::Tape;
    ///
    /// let w = array![[1.0, 2.0]];
    /// let grad = |scale: f64| {
    ///     let tape = Tape::new();
    ///     tape.backward(tape.param(&w).sum().mul_scalar(scale)).unwrap()
    /// };
    /// let mut total = grad(1.0);
    /// total.add_scaled(0.5, &grad(2.0)).unwrap();
    /// assert_eq!(total.wrt(&w).unwrap(), &array![[2.0, 2.0]]);
    /// ```
    ///
    /// # Errors
    ///
    /// `Unmatched` if the two do not hold gradients of the same parameters with the
    /// same shapes (nothing is changed then).
    #[track_caller]
    pub fn add_scaled(&mut self, alpha: F, other: &Gradients<F>) -> Result<()> {
        self.combine(other, Location::caller(), |d, &o| *d += alpha * o)
    }

    /// `self ← α·other`, parameter by parameter, in `self`'s buffers: the first term of
    /// a weighted sum that a training loop keeps from one step to the next.
    ///
    /// # Errors
    ///
    /// As [`Gradients::add_scaled`].
    #[track_caller]
    pub fn assign_scaled(&mut self, alpha: F, other: &Gradients<F>) -> Result<()> {
        self.combine(other, Location::caller(), |d, &o| *d = alpha * o)
    }

    /// `self ← α·self`: every gradient held, retained intermediates included.
    pub fn scale(&mut self, alpha: F) {
        for e in &mut self.entries {
            e.grad.mapv_inplace(|v| alpha * v);
        }
        self.refresh_transposed();
    }

    /// The parameters' gradient buffers, mutably, in the order their leaves were created
    /// (the order of first use in the forward pass, the same on every shard that runs the
    /// same program): what a collective reduces in place. Only gradients found by an
    /// array are included (those of borrowed parameters): not retained intermediates,
    /// owned leaves or parameters that overlap another ([`Missing`](crate::Missing)). Change values only: the gradient of a parameter that also went on the
    /// tape transposed is found by [`Gradients::wrt`] through a copy made at backward.
    pub fn params_mut(&mut self) -> impl Iterator<Item = &mut ndarray::Array2<F>> {
        self.entries
            .iter_mut()
            .filter(|e| e.key.is_some())
            .map(|e| &mut e.grad)
    }

    /// Every leaf's gradient buffer (parameters, owned leaves, overlapping views; not
    /// retained intermediates), in node order: what a backward pass announces to a
    /// [`LeafHook`](crate::backward::LeafHook).
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    pub(crate) fn leaves_mut(&mut self) -> impl Iterator<Item = &mut ndarray::Array2<F>> {
        self.entries
            .iter_mut()
            .filter(|e| e.leaf)
            .map(|e| &mut e.grad)
    }

    /// Applies `f(self's element, other's element)` to every parameter's gradient, after
    /// checking that the two hold the same parameters with the same shapes.
    fn combine(
        &mut self,
        other: &Gradients<F>,
        location: &'static Location<'static>,
        f: impl Fn(&mut F, &F),
    ) -> Result<()> {
        let unmatched = |shape| {
            Err(Error::new(
                "gradients",
                ErrorKind::Unmatched { shape },
                location,
            ))
        };
        let mut pairs = Vec::with_capacity(self.entries.len());
        for (i, e) in self.entries.iter().enumerate() {
            let Some(key) = e.key else {
                return unmatched(e.grad.dim());
            };
            match other.entries.iter().position(|o| o.key == Some(key)) {
                Some(j) if other.entries[j].grad.dim() == e.grad.dim() => pairs.push((i, j)),
                _ => return unmatched(e.grad.dim()),
            }
        }
        if let Some(o) = other
            .entries
            .iter()
            .find(|o| o.key.is_none() || !self.entries.iter().any(|e| e.key == o.key))
        {
            return unmatched(o.grad.dim());
        }
        for (i, j) in pairs {
            Zip::from(&mut self.entries[i].grad)
                .and(&other.entries[j].grad)
                .for_each(&f);
        }
        self.refresh_transposed();
        Ok(())
    }

    /// Recomputes the transposed copies from the gradients they copy.
    pub(crate) fn refresh_transposed(&mut self) {
        let Gradients {
            entries,
            transposed,
            ..
        } = self;
        for (key, copy) in transposed.iter_mut() {
            let own = Some(key.transposed());
            if let Some(e) = entries.iter().find(|e| e.key == own) {
                copy.assign(&e.grad.t());
            }
        }
    }
}
