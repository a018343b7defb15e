//! Data parallelism across processes and machines, on MPI (feature `mpi`): the same
//! synchronous scheme as Horovod and PyTorch's DDP, on the system's MPI library through the
//! `mpi` crate (rsmpi).
//!
//! Every process (rank) runs the same program on its own shard of each batch:
//!
//! 1. [`Distributed::broadcast`] copies rank 0's initial parameters to every rank (in
//!    place);
//! 2. each rank records its forward pass on its own tape, and [`Distributed::backward`]
//!    runs backward with the rank's share of the batch as seed, and sums the gradients
//!    over the ranks with allreduce, in place in the gradient buffers. Reduction starts
//!    during backward: the tape knows each parameter's last use, so a gradient is handed
//!    to MPI as soon as it is final, in buckets of about [`BUCKET_BYTES`], and later ones
//!    are computed while earlier ones travel (as far as the MPI library progresses
//!    non-blocking collectives: Open MPI advances them inside MPI calls, which tapegrad
//!    makes each time a gradient is ready);
//! 3. every rank takes the same optimizer step on the same summed gradients, and only
//!    rank 0 writes checkpoints ([`Distributed::save`]).
//!
//! **The mean.** Rank `r`'s loss is the mean over its `nᵣ` rows; `backward` is given its
//! share `nᵣ/N` (from [`Distributed::share`]) and seeds backward with it, so the sum over
//! ranks is exactly the full batch's mean gradient `Σᵣ (nᵣ/N) gᵣ`, as with
//! [`DataParallel`](super::DataParallel) in one process.
//!
//! **In place.** A gradient of at least `bucket_bytes` is reduced in its own buffer
//! (`MPI_IN_PLACE`); smaller ones that become final together are packed into one reused
//! buffer for one message and copied back (bytes of small tensors only; no copy of the
//! parameter set). The order of messages follows the graph, which is the same on every
//! rank that runs the same program. MPI is called from the thread that calls `backward`:
//! initialise MPI on it (`mpi::initialize()` is enough when it is the main thread).
//!
//! **Errors.** The ranks run their collectives in lockstep, so a rank that fails a step
//! (an error from `backward`, a NaN caught by anomaly detection on its shard) must not go
//! on alone: the others would wait for its next message, or pair theirs with the wrong
//! one. Treat an error as fatal for the job: return it from `main` (`mpirun` then stops
//! every rank) or call `MPI_Abort`.
//!
//! **Requirements.** The system MPI with its development files, and libclang for the
//! `mpi` crate's bindings: on Debian and Ubuntu,
//! `apt-get install libopenmpi-dev openmpi-bin libclang-dev pkg-config` (`mpich` and
//! `libmpich-dev` work too). Run with `mpirun -np 2 program` (add `--oversubscribe` when
//! there are more ranks than cores, `--allow-run-as-root` as root, and `--bind-to none`
//! when a rank runs several threads). `examples/digits_mpi.rs` trains the digits MLP this
//! way; the README's "Data parallelism" section has the measurements and a cost model for
//! more machines.
//!
//! ```no_run
//! use ndarray::{s, Array2};
//! use tapegrad::nn::{mlp, Activation, Init, Module};
//! use tapegrad::optim::{Optimizer, Sgd};
//! use tapegrad::parallel::mpi::Distributed;
//! use tapegrad::Tape;
//!
//! let universe = mpi::initialize().expect("MPI initialises once");
//! let world = universe.world();
//! let mut dist = Distributed::new(&world).unwrap();
//! let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
//! let mut model = mlp::<f64>(&[4, 8, 1], Activation::Tanh, Activation::Identity, Init::Glorot, &mut rng);
//! dist.broadcast(&mut model).unwrap(); // every rank starts from rank 0's parameters
//! let (x, y) = (Array2::<f64>::ones((64, 4)), Array2::<f64>::zeros((64, 1)));
//! let mut opt = Sgd::new(0.1);
//! let mut grads = None;
//! for _ in 0..10 {
//!     let rows = dist.shard(x.nrows()); // this rank's rows
//!     let tape = Tape::new();
//!     let out = model.forward(tape.constant(x.slice(s![rows.clone(), ..]))).unwrap();
//!     let loss = out.mse_loss(tape.constant(y.slice(s![rows, ..])));
//!     let g = dist.backward(loss, dist.share(x.nrows()), grads.take()).unwrap();
//!     opt.step(&mut model, &g).unwrap(); // the same step on every rank
//!     grads = Some(g);
//! }
//! dist.save(&model, "model.safetensors").unwrap(); // rank 0 writes, the others do not
//! ```

use std::ops::Range;
use std::os::raw::c_void;
use std::panic::Location;
use std::path::Path;

use mpi::datatype::Equivalence;
use mpi::ffi;
use mpi::raw::AsRaw;
use mpi::topology::Communicator;
use ndarray::Array2;

use super::shard_ranges;
use crate::backward::LeafHook;
use crate::error::{Error, ErrorKind, Result};
use crate::io::CheckpointError;
use crate::nn::Parameters;
use crate::{BackwardOptions, Float, Gradients, Tensor};

/// The default bucket size: gradients that become final together are sent in messages
/// of about this many bytes (PyTorch's DDP uses 25 MiB; smaller buckets start the first
/// message sooner on small models).
pub const BUCKET_BYTES: usize = 1 << 20;

/// Data-parallel training over the ranks of an MPI communicator; see the
/// [module](self).
pub struct Distributed<'c, F: Float, C: Communicator> {
    comm: &'c C,
    bucket_bytes: usize,
    in_place: *mut c_void,
    /// Pack buffers of small gradients, kept from one step to the next.
    packs: Vec<Vec<F>>,
}

/// `MPI_IN_PLACE`, a C macro the `mpi` crate does not export: `(void *) 1` in Open MPI,
/// `(void *) -1` in MPICH and the MPI libraries derived from it.
fn in_place(location: &'static Location<'static>) -> Result<*mut c_void> {
    let version = mpi::environment::library_version().unwrap_or_default();
    if version.contains("Open MPI") {
        Ok(std::ptr::without_provenance_mut(1))
    } else if ["MPICH", "Intel", "MVAPICH"]
        .iter()
        .any(|name| version.contains(name))
    {
        Ok(std::ptr::without_provenance_mut(usize::MAX))
    } else {
        let version = version.trim().to_string();
        Err(Error::new(
            "mpi",
            ErrorKind::MpiLibrary { version },
            location,
        ))
    }
}

/// An MPI return code as a result.
fn check(routine: &'static str, code: i32, location: &'static Location<'static>) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(Error::new(
            "mpi",
            ErrorKind::Mpi { routine, code },
            location,
        ))
    }
}

/// A gradient's memory as one slice (any contiguous layout: every rank has the same).
fn memory<F: Float>(a: &mut Array2<F>) -> &mut [F] {
    if a.as_slice_memory_order().is_none() {
        *a = a.as_standard_layout().into_owned();
    }
    a.as_slice_memory_order_mut()
        .expect("made contiguous above")
}

impl<'c, F: Float + Equivalence, C: Communicator> Distributed<'c, F, C> {
    /// Training over the ranks of `comm` (usually `universe.world()`).
    ///
    /// # Errors
    ///
    /// `MpiLibrary` if the MPI library is neither Open MPI nor of the MPICH family.
    #[track_caller]
    pub fn new(comm: &'c C) -> Result<Self> {
        Ok(Distributed {
            comm,
            bucket_bytes: BUCKET_BYTES,
            in_place: in_place(Location::caller())?,
            packs: Vec::new(),
        })
    }

    /// Sets the bucket size in bytes ([`BUCKET_BYTES`] by default); 0 sends every
    /// gradient as its own message as soon as it is final.
    pub fn bucket_bytes(mut self, bytes: usize) -> Self {
        self.bucket_bytes = bytes;
        self
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.comm.rank() as usize
    }

    /// The number of ranks.
    pub fn size(&self) -> usize {
        self.comm.size() as usize
    }

    /// Whether this is rank 0, the one that writes checkpoints and reports.
    pub fn is_root(&self) -> bool {
        self.rank() == 0
    }

    /// This rank's rows of a batch of `rows` ([`shard_ranges`]: contiguous, lengths
    /// differing by at most one).
    pub fn shard(&self, rows: usize) -> Range<usize> {
        shard_ranges(rows, self.size())[self.rank()].clone()
    }

    /// This rank's share of a batch of `rows`: its rows / `rows` (0 for an empty batch).
    pub fn share(&self, rows: usize) -> F {
        if rows == 0 {
            return F::zero();
        }
        let mine = self.shard(rows).len();
        F::from(mine).unwrap_or_else(F::zero) / F::from(rows).unwrap_or_else(F::one)
    }

    /// Copies rank 0's parameters into every rank's model, in place (`MPI_Bcast` per
    /// parameter, in the model's parameter order).
    ///
    /// # Errors
    ///
    /// `Mpi` if a broadcast fails.
    #[track_caller]
    pub fn broadcast<P: Parameters<F> + ?Sized>(&self, model: &mut P) -> Result<()> {
        let location = Location::caller();
        let mut outcome = Ok(());
        model.visit_mut(&mut |_, p| {
            if outcome.is_err() {
                return;
            }
            for data in memory(p).chunks_mut(MAX_COUNT) {
                let code = unsafe {
                    // SAFETY: `data` is a live buffer of `data.len()` elements of F's MPI type
                    ffi::MPI_Bcast(
                        data.as_mut_ptr().cast(),
                        count(data.len()),
                        F::equivalent_datatype().as_raw(),
                        0,
                        self.comm.as_raw(),
                    )
                };
                if outcome.is_ok() {
                    outcome = check("MPI_Bcast", code, location);
                }
            }
        });
        outcome
    }

    /// Backward from this rank's `loss` (the mean over its shard), seeded with its `share`
    /// of the batch ([`Distributed::share`]), with every leaf gradient summed over the
    /// ranks as soon as it is final (see the [module](self)). On every rank the result
    /// is the full batch's mean gradient. `reuse` takes the last step's gradients, whose
    /// buffers are written again ([`BackwardOptions::reuse`]).
    ///
    /// # Errors
    ///
    /// As [`Tape::backward`](crate::Tape::backward), and `Mpi` if a reduction fails.
    #[track_caller]
    pub fn backward(
        &mut self,
        loss: Tensor<'_, F>,
        share: F,
        reuse: impl Into<Option<Gradients<F>>>,
    ) -> Result<Gradients<F>> {
        let location = Location::caller();
        let opts = BackwardOptions::new()
            .seed(Array2::from_elem((1, 1), share))
            .reuse(reuse);
        if self.size() == 1 {
            // nothing to sum with
            return loss.tape().backward_hooked(loss, opts, None, location);
        }
        let mut reducer = Reducer::new(self, location);
        let grads = loss
            .tape()
            .backward_hooked(loss, opts, Some(&mut reducer), location);
        match (grads, reducer.error) {
            (Err(e), _) | (Ok(_), Some(e)) => Err(e),
            (Ok(grads), None) => Ok(grads),
        }
    }

    /// Sums `grads` over the ranks in place, bucketed as in [`Distributed::backward`]:
    /// for gradients computed another way (a [`DataParallel`](super::DataParallel) step
    /// over this rank's cores, say). Every leaf's gradient is summed (as in `backward`);
    /// every rank must hold the same leaves, in the same order.
    ///
    /// # Errors
    ///
    /// `Mpi` if a reduction fails.
    #[track_caller]
    pub fn allreduce(&mut self, grads: &mut Gradients<F>) -> Result<()> {
        let location = Location::caller();
        if self.size() == 1 {
            return Ok(());
        }
        let mut reducer = Reducer::new(self, location);
        for g in grads.leaves_mut() {
            reducer.ready(g);
        }
        reducer.finish();
        grads.refresh_transposed();
        reducer.error.map_or(Ok(()), Err)
    }

    /// Writes a checkpoint of `model` ([`crate::io::save`]) on rank 0; the other ranks,
    /// which hold the same parameters, write nothing.
    ///
    /// # Errors
    ///
    /// As [`crate::io::save`], on rank 0.
    pub fn save<P: Parameters<F>>(
        &self,
        model: &P,
        path: impl AsRef<Path>,
    ) -> std::result::Result<(), CheckpointError> {
        if self.is_root() {
            crate::io::save(model, path)
        } else {
            Ok(())
        }
    }
}

/// The most elements one MPI call takes (its count is an `int`): longer buffers go in
/// several calls.
const MAX_COUNT: usize = i32::MAX as usize;

/// An element count as MPI's `int` (at most [`MAX_COUNT`] by construction).
fn count(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}

/// Gradient buffers: (memory, length).
type Pieces<F> = Vec<(*mut F, usize)>;

/// A bucket in flight: its request, and for a packed bucket the pack and where its
/// pieces go back.
struct Flight<F> {
    request: ffi::MPI_Request,
    pack: Option<(Vec<F>, Pieces<F>)>,
}

/// The hook backward calls as gradients become final: it groups them into buckets and
/// starts a non-blocking in-place allreduce for each, then waits for all at the end.
struct Reducer<'d, 'c, F: Float, C: Communicator> {
    /// The reduction's settings, and the pack buffers it reuses from step to step.
    dist: &'d mut Distributed<'c, F, C>,
    location: &'static Location<'static>,
    /// Gradients of the bucket being filled.
    open: Pieces<F>,
    open_bytes: usize,
    flights: Vec<Flight<F>>,
    /// The requests of the flights, for MPI_Testall and MPI_Waitall.
    requests: Vec<ffi::MPI_Request>,
    error: Option<Error>,
}

impl<'d, 'c, F: Float + Equivalence, C: Communicator> Reducer<'d, 'c, F, C> {
    fn new(dist: &'d mut Distributed<'c, F, C>, location: &'static Location<'static>) -> Self {
        Reducer {
            dist,
            location,
            open: Vec::new(),
            open_bytes: 0,
            flights: Vec::new(),
            requests: Vec::new(),
            error: None,
        }
    }

    fn fail(&mut self, routine: &'static str, code: i32) {
        if let (None, Err(e)) = (&self.error, check(routine, code, self.location)) {
            self.error = Some(e);
        }
    }

    /// Starts the allreduce of the open bucket: in place on its one gradient, or on a
    /// pack of its several.
    fn start(&mut self) {
        let open = std::mem::take(&mut self.open);
        self.open_bytes = 0;
        let (ptr, len, pack) = match open[..] {
            [] => return,
            [(ptr, len)] => (ptr, len, None),
            _ => {
                let total = open.iter().map(|&(_, len)| len).sum();
                let mut pack = self.dist.packs.pop().unwrap_or_default();
                pack.clear();
                for &(ptr, len) in &open {
                    // SAFETY: `ptr` is a final gradient buffer of `len` elements, alive
                    // and untouched by backward until `finish` (LeafHook's contract)
                    pack.extend_from_slice(unsafe { std::slice::from_raw_parts(ptr, len) });
                }
                debug_assert_eq!(pack.len(), total);
                let ptr = pack.as_mut_ptr();
                (ptr, total, Some((pack, open)))
            }
        };
        let mut request = std::mem::MaybeUninit::<ffi::MPI_Request>::uninit();
        let code = unsafe {
            // SAFETY: `ptr` holds `len` elements that stay alive and unread until the
            // request completes in `finish` (a pack's heap buffer does not move when
            // the Vec is moved into the flight)
            ffi::MPI_Iallreduce(
                self.dist.in_place,
                ptr.cast(),
                count(len),
                F::equivalent_datatype().as_raw(),
                mpi::collective::SystemOperation::sum().as_raw(),
                self.dist.comm.as_raw(),
                request.as_mut_ptr(),
            )
        };
        if code != 0 {
            self.fail("MPI_Iallreduce", code);
            if let Some((pack, _)) = pack {
                self.dist.packs.push(pack);
            }
            return;
        }
        let request = unsafe { request.assume_init() };
        self.flights.push(Flight { request, pack });
    }

    /// Lets MPI progress the reductions in flight (Open MPI advances non-blocking
    /// collectives only inside MPI calls).
    fn progress(&mut self) {
        if self.flights.is_empty() {
            return;
        }
        self.requests.clear();
        self.requests.extend(self.flights.iter().map(|f| f.request));
        let mut done = 0;
        let code = unsafe {
            // SAFETY: the requests are live; statuses are ignored
            ffi::MPI_Testall(
                count(self.requests.len()),
                self.requests.as_mut_ptr(),
                &mut done,
                ffi::RSMPI_STATUSES_IGNORE,
            )
        };
        self.fail("MPI_Testall", code);
        // completed requests are set to MPI_REQUEST_NULL, which a later wait accepts
        for (f, &r) in self.flights.iter_mut().zip(&self.requests) {
            f.request = r;
        }
    }
}

impl<F: Float + Equivalence, C: Communicator> LeafHook<F> for Reducer<'_, '_, F, C> {
    fn ready(&mut self, grad: &mut Array2<F>) {
        for data in memory(grad).chunks_mut(MAX_COUNT) {
            // a gradient of a bucket's size or more goes alone, in place; a pack is one
            // message too, and never passes MAX_COUNT elements
            let open: usize = self.open.iter().map(|&(_, len)| len).sum();
            let large = std::mem::size_of_val(data) >= self.dist.bucket_bytes;
            if large || open + data.len() > MAX_COUNT {
                self.start();
            }
            self.open.push((data.as_mut_ptr(), data.len()));
            self.open_bytes += std::mem::size_of_val(data);
            if self.open_bytes >= self.dist.bucket_bytes {
                self.start();
            }
        }
        self.progress();
    }

    fn tick(&mut self) {
        self.progress();
    }

    fn finish(&mut self) {
        self.start();
        self.requests.clear();
        self.requests.extend(self.flights.iter().map(|f| f.request));
        let mut waited = true;
        if !self.requests.is_empty() {
            let code = unsafe {
                // SAFETY: live requests (or MPI_REQUEST_NULL); statuses are ignored
                ffi::MPI_Waitall(
                    count(self.requests.len()),
                    self.requests.as_mut_ptr(),
                    ffi::RSMPI_STATUSES_IGNORE,
                )
            };
            self.fail("MPI_Waitall", code);
            waited = code == 0;
        }
        for flight in self.flights.drain(..) {
            if let Some((pack, pieces)) = flight.pack {
                if !waited {
                    // MPI may still write into it: leak it rather than reuse or free it
                    std::mem::forget(pack);
                    continue;
                }
                let mut at = 0;
                for (ptr, len) in pieces {
                    // SAFETY: as in `start`; the reduction is complete
                    unsafe { std::slice::from_raw_parts_mut(ptr, len) }
                        .copy_from_slice(&pack[at..at + len]);
                    at += len;
                }
                self.dist.packs.push(pack);
            }
        }
    }
}
