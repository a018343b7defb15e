//! The element types a tape can hold: `f32` and `f64`.
//!
//! f32 is the type for speed (the benches and the examples); f64 is the type for gradient
//! checks (finite differences need the precision, as PyTorch's `gradcheck` insists).

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

use ndarray::{LinalgScalar, ScalarOperand};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A floating-point element type: implemented for `f32` and `f64` only (sealed).
///
/// Everything in tapegrad is generic over it: `Tape<'t, f32>` for training,
/// `Tape<'t, f64>` for gradient checks.
pub trait Float:
    num_traits::Float
    + LinalgScalar
    + ScalarOperand
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
    + Default
    + Debug
    + Display
    + Send
    + Sync
    + 'static
    + sealed::Sealed
    + crate::pool::Pooled
    + crate::kernels::real::Real
{
    /// Converts an `f64` literal or count, rounding to nearest for `f32`.
    fn cast(x: f64) -> Self;
    /// Converts to `f64` (exact for both types).
    fn as_f64(self) -> f64;
    /// The error function `erf(x) = 2/√π ∫₀ˣ e^(−t²) dt` (libm's `erf` / `erff`).
    fn erf(self) -> Self;
    /// Appends the little-endian bytes (checkpoints).
    #[doc(hidden)]
    fn write_le(self, out: &mut Vec<u8>);
    /// Reads from exactly `size_of::<Self>()` little-endian bytes (checkpoints).
    #[doc(hidden)]
    fn read_le(bytes: &[u8]) -> Self;
}

impl Float for f32 {
    #[inline]
    fn cast(x: f64) -> Self {
        x as f32
    }
    #[inline]
    fn as_f64(self) -> f64 {
        f64::from(self)
    }
    #[inline]
    fn erf(self) -> Self {
        libm::erff(self)
    }
    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn read_le(bytes: &[u8]) -> Self {
        f32::from_le_bytes(bytes.try_into().expect("4 bytes"))
    }
}

impl Float for f64 {
    #[inline]
    fn cast(x: f64) -> Self {
        x
    }
    #[inline]
    fn as_f64(self) -> f64 {
        self
    }
    #[inline]
    fn erf(self) -> Self {
        libm::erf(self)
    }
    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn read_le(bytes: &[u8]) -> Self {
        f64::from_le_bytes(bytes.try_into().expect("8 bytes"))
    }
}
