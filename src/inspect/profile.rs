//! A per-op profile: where a step's time goes, by op kind and call site.
//!
//! [`start`] switches profiling on for the calling thread; every tape created on it
//! afterwards times its ops, forward and backward, until [`finish`] returns the
//! [`Profile`] (whose `Display` is a table sorted by time). Off by default and free then:
//! a tape asks once, when it is created, whether profiling is on.
//!
//! What is measured:
//!
//! - **forward time** of an op: from the end of the previous record on its tape to the
//!   start of its own record, i.e. the op's computation (tapegrad's ops run back to back
//!   in a step; time your own code spends between two ops counts toward the later one,
//!   and a leaf restarts the clock, so time before a leaf is not counted);
//! - **backward time**: the run of the op's rule;
//! - **bytes**: of the op's result (views and borrowed leaves: 0) and of the gradient
//!   buffers its rule created (contributions added into an existing buffer: 0);
//! - the tape's **own overhead**: the time spent recording nodes, and the time of each
//!   backward pass outside the rules (bookkeeping, releasing values, collecting the
//!   gradients).
//!
//! Ops a layer records inside a container ([`Sequential`](crate::nn::Sequential), the
//! attention layers, or [`forward_child`](crate::nn::forward_child) in a layer of your
//! own) are attributed to that layer, by its path in the model and its type
//! ([`SiteStats::layer`]): the two `linear` ops of a two-layer model share a line of
//! tapegrad's source, but not a layer. [`Profile::by_layer`] sums them per layer.
//!
//! Profiling reads the clock about four times per op, so it adds tens of nanoseconds per
//! op; tapes on other threads (a [`DataParallel`](crate::parallel::DataParallel) shard)
//! are profiled only if they call [`start`] themselves.
//!
//! ```
//! use ndarray::Array2;
//! use tapegrad::{inspect::profile, Tape};
//!
//! let w = Array2::<f64>::ones((64, 64));
//! profile::start();
//! for _ in 0..3 {
//!     let tape = Tape::new();
//!     let x = tape.constant(Array2::ones((32, 64)));
//!     let loss = x.matmul(tape.param(&w)).tanh().sum();
//!     tape.backward(loss).unwrap();
//! }
//! let report = profile::finish();
//! let matmul = report.by_op().into_iter().find(|s| s.op == "matmul").unwrap();
//! assert_eq!((matmul.forward_calls, matmul.backward_calls), (3, 3));
//! assert_eq!(matmul.forward_bytes, 3 * 32 * 64 * 8);
//! println!("{report}");
//! ```

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::panic::Location;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::PROFILE;

/// One op at one call site in one layer (or, in [`Profile::by_op`], one op kind; in
/// [`Profile::by_layer`], one layer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteStats {
    /// The op, as named in the rule table (`""` in [`Profile::by_layer`]).
    pub op: &'static str,
    /// The caller's line of the forward op; `None` in [`Profile::by_op`] and
    /// [`Profile::by_layer`].
    pub location: Option<&'static Location<'static>>,
    /// The layer the op was recorded in, when a container ran it: its path in the model
    /// (`"2"`, `"1.attention.q"`) and its type (`"Linear"`); `None` outside any layer and
    /// in [`Profile::by_op`].
    pub layer: Option<(String, &'static str)>,
    /// Forward calls.
    pub forward_calls: u64,
    /// Forward time (see the [module](self) for what it includes).
    pub forward: Duration,
    /// Bytes of the results the forward calls produced.
    pub forward_bytes: u64,
    /// Rule runs in backward.
    pub backward_calls: u64,
    /// Time in the rule.
    pub backward: Duration,
    /// Bytes of the gradient buffers the rule created.
    pub backward_bytes: u64,
}

impl SiteStats {
    /// Forward and backward time.
    pub fn total(&self) -> Duration {
        self.forward + self.backward
    }

    fn new(
        op: &'static str,
        location: Option<&'static Location<'static>>,
        layer: Option<(String, &'static str)>,
    ) -> Self {
        SiteStats {
            op,
            location,
            layer,
            forward_calls: 0,
            forward: Duration::ZERO,
            forward_bytes: 0,
            backward_calls: 0,
            backward: Duration::ZERO,
            backward_bytes: 0,
        }
    }

    fn absorb(&mut self, s: &SiteStats) {
        self.forward_calls += s.forward_calls;
        self.forward += s.forward;
        self.forward_bytes += s.forward_bytes;
        self.backward_calls += s.backward_calls;
        self.backward += s.backward;
        self.backward_bytes += s.backward_bytes;
    }
}

/// What [`finish`] returns: the time of every op by call site, and the tape's overhead.
/// `Display` prints two tables sorted by time (by call site, by op kind) and the
/// overhead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// Every op at every call site, most time first.
    pub sites: Vec<SiteStats>,
    /// Time spent recording nodes on tapes (the tape's forward overhead).
    pub record: Duration,
    /// Nodes recorded.
    pub records: u64,
    /// Time of the backward passes outside the rules (the tape's backward overhead).
    pub backward_overhead: Duration,
    /// Backward passes run.
    pub backward_passes: u64,
    /// Time from [`start`] to [`finish`].
    pub wall: Duration,
}

impl Profile {
    /// The sites summed by op kind, most time first.
    pub fn by_op(&self) -> Vec<SiteStats> {
        let mut ops: Vec<SiteStats> = Vec::new();
        for s in &self.sites {
            match ops.iter_mut().find(|o| o.op == s.op) {
                Some(o) => o.absorb(s),
                None => {
                    let mut o = SiteStats::new(s.op, None, None);
                    o.absorb(s);
                    ops.push(o);
                }
            }
        }
        sort(&mut ops);
        ops
    }

    /// The sites summed by layer (the ops recorded outside any layer as one row with
    /// `layer: None`), most time first. A layer's row counts the ops recorded directly in
    /// it, not those of the layers it holds.
    pub fn by_layer(&self) -> Vec<SiteStats> {
        let mut layers: Vec<SiteStats> = Vec::new();
        for s in &self.sites {
            match layers.iter_mut().find(|l| l.layer == s.layer) {
                Some(l) => l.absorb(s),
                None => {
                    let mut l = SiteStats::new("", None, s.layer.clone());
                    l.absorb(s);
                    layers.push(l);
                }
            }
        }
        sort(&mut layers);
        layers
    }

    /// Time in ops, forward and backward.
    pub fn ops_time(&self) -> Duration {
        self.sites.iter().map(SiteStats::total).sum()
    }
}

fn sort(sites: &mut [SiteStats]) {
    sites.sort_by(|a, b| {
        b.total()
            .cmp(&a.total())
            .then(a.op.cmp(b.op))
            .then_with(|| a.layer.cmp(&b.layer))
    });
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn table(f: &mut fmt::Formatter<'_>, rows: &[SiteStats], all: Duration) -> fmt::Result {
    let place = |s: &SiteStats| {
        s.location
            .map_or_else(String::new, |l| format!("{}:{}", l.file(), l.line()))
    };
    let layer = |s: &SiteStats| {
        s.layer
            .as_ref()
            .map_or_else(String::new, |(path, kind)| format!("{path} ({kind})"))
    };
    let width = |column: &dyn Fn(&SiteStats) -> String, title: &str| {
        let w = rows.iter().map(|s| column(s).chars().count()).max();
        match w.unwrap_or(0) {
            0 => 0,
            w => w.max(title.len()),
        }
    };
    let ops = rows.iter().any(|s| !s.op.is_empty());
    let op_w = rows.iter().map(|s| s.op.len()).max().unwrap_or(2).max(2);
    let site_w = width(&place, "call site");
    let layer_w = width(&layer, "layer");
    let layers = rows.iter().any(|s| s.layer.is_some());
    if ops {
        write!(f, "{:op_w$}  ", "op")?;
    }
    if site_w > 0 {
        write!(f, "{:site_w$}  ", "call site")?;
    }
    if layers {
        write!(f, "{:layer_w$}  ", "layer")?;
    }
    writeln!(
        f,
        "{:>7} {:>11} {:>7} {:>11} {:>11} {:>6} {:>10} {:>10}",
        "fwd n", "fwd ms", "bwd n", "bwd ms", "total ms", "%", "fwd MB", "bwd MB"
    )?;
    for s in rows {
        if ops {
            write!(f, "{:op_w$}  ", s.op)?;
        }
        if site_w > 0 {
            write!(f, "{:site_w$}  ", place(s))?;
        }
        if layers {
            let name = match layer(s) {
                name if name.is_empty() => "(none)".to_string(),
                name => name,
            };
            write!(f, "{name:layer_w$}  ")?;
        }
        let share = if all.is_zero() {
            0.0
        } else {
            100.0 * s.total().as_secs_f64() / all.as_secs_f64()
        };
        writeln!(
            f,
            "{:>7} {:>11.3} {:>7} {:>11.3} {:>11.3} {:>6.1} {:>10.2} {:>10.2}",
            s.forward_calls,
            ms(s.forward),
            s.backward_calls,
            ms(s.backward),
            ms(s.total()),
            share,
            s.forward_bytes as f64 / 1e6,
            s.backward_bytes as f64 / 1e6
        )?;
    }
    Ok(())
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all = self.ops_time() + self.record + self.backward_overhead;
        writeln!(f, "by call site:")?;
        table(f, &self.sites, all)?;
        writeln!(f, "\nby op:")?;
        table(f, &self.by_op(), all)?;
        if self.sites.iter().any(|s| s.layer.is_some()) {
            writeln!(f, "\nby layer:")?;
            table(f, &self.by_layer(), all)?;
        }
        let share = |d: Duration| {
            if all.is_zero() {
                0.0
            } else {
                100.0 * d.as_secs_f64() / all.as_secs_f64()
            }
        };
        writeln!(
            f,
            "\ntape overhead: recording {:.3} ms ({} nodes, {:.1} %), backward bookkeeping {:.3} ms ({} passes, {:.1} %)",
            ms(self.record),
            self.records,
            share(self.record),
            ms(self.backward_overhead),
            self.backward_passes,
            share(self.backward_overhead)
        )?;
        writeln!(
            f,
            "ops and tape {:.3} ms of {:.3} ms wall time since profile::start",
            ms(all),
            ms(self.wall)
        )
    }
}

#[derive(Default)]
struct Collector {
    started: Option<Instant>,
    index: HashMap<(usize, usize, u32), usize>,
    sites: Vec<SiteStats>,
    /// The layers entered, numbered from 1 (0 is "no layer"): path and type.
    layers: Vec<(String, &'static str)>,
    /// A layer's number by its parent's number, its name in the parent and its type.
    layer_index: HashMap<(u32, String, &'static str), u32>,
    record: Duration,
    records: u64,
    backward_overhead: Duration,
    backward_passes: u64,
}

impl Collector {
    fn site(
        &mut self,
        op: &'static str,
        location: &'static Location<'static>,
        layer: u32,
    ) -> &mut SiteStats {
        let key = (op.as_ptr() as usize, location as *const _ as usize, layer);
        let next = self.sites.len();
        let i = *self.index.entry(key).or_insert(next);
        if i == next {
            let layer = self.layer(layer).cloned();
            self.sites.push(SiteStats::new(op, Some(location), layer));
        }
        &mut self.sites[i]
    }

    /// Layer number `n`'s path and type (`None` for 0, or a number from before the last
    /// [`start`]).
    fn layer(&self, n: u32) -> Option<&(String, &'static str)> {
        (n as usize).checked_sub(1).and_then(|i| self.layers.get(i))
    }
}

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static DATA: RefCell<Collector> = RefCell::new(Collector::default());
}

/// Starts profiling on this thread, discarding anything collected before: tapes created
/// on this thread from now on time their ops until [`finish`].
pub fn start() {
    let _ = DATA.try_with(|d| {
        *d.borrow_mut() = Collector {
            started: Some(Instant::now()),
            ..Collector::default()
        }
    });
    if ON.try_with(|on| on.replace(true)) == Ok(false) {
        PROFILING.fetch_add(1, Ordering::Relaxed);
    }
}

/// Stops profiling on this thread and returns what was collected since [`start`] (an
/// empty profile if it was not started). Tapes created while profiling still report to
/// this thread's collector until they are dropped; their reports after `finish` are
/// discarded by the next [`start`].
pub fn finish() -> Profile {
    if ON.try_with(|on| on.replace(false)) == Ok(true) {
        PROFILING.fetch_sub(1, Ordering::Relaxed);
    }
    let c = DATA
        .try_with(|d| std::mem::take(&mut *d.borrow_mut()))
        .unwrap_or_default();
    let mut sites = c.sites;
    sort(&mut sites);
    Profile {
        sites,
        record: c.record,
        records: c.records,
        backward_overhead: c.backward_overhead,
        backward_passes: c.backward_passes,
        wall: c.started.map_or(Duration::ZERO, |s| s.elapsed()),
    }
}

/// Threads profiling now: a new tape looks at its thread's flag only when some are.
static PROFILING: AtomicUsize = AtomicUsize::new(0);

/// The mode bits a tape created now starts with.
#[inline]
pub(crate) fn modes_for_new_tape() -> u8 {
    if PROFILING.load(Ordering::Relaxed) > 0 && ON.try_with(Cell::get).unwrap_or(false) {
        PROFILE
    } else {
        0
    }
}

fn with(f: impl FnOnce(&mut Collector)) {
    let _ = DATA.try_with(|d| {
        if let Ok(mut d) = d.try_borrow_mut() {
            f(&mut d);
        }
    });
}

/// The number of layer `name` inside layer `parent` (0: the top), of type `kind`,
/// numbered on first entry.
pub(crate) fn enter_layer(parent: u32, name: &str, kind: &'static str) -> u32 {
    let mut n = 0;
    with(|c| {
        let key = (parent, name.to_string(), kind);
        if let Some(&known) = c.layer_index.get(&key) {
            n = known;
            return;
        }
        let path = match c.layer(parent) {
            Some((outer, _)) => format!("{outer}.{name}"),
            None => name.to_string(),
        };
        c.layers.push((path, kind));
        n = c.layers.len() as u32;
        c.layer_index.insert(key, n);
    });
    n
}

/// One recorded node: the op's time, the record's time, the result's bytes.
pub(crate) fn forward(
    op: &'static str,
    location: &'static Location<'static>,
    layer: u32,
    time: Duration,
    record: Duration,
    bytes: usize,
) {
    with(|c| {
        c.record += record;
        c.records += 1;
        let s = c.site(op, location, layer);
        s.forward_calls += 1;
        s.forward += time;
        s.forward_bytes += bytes as u64;
    });
}

/// One rule run in backward.
pub(crate) fn backward(
    op: &'static str,
    location: &'static Location<'static>,
    layer: u32,
    time: Duration,
    bytes: usize,
) {
    with(|c| {
        let s = c.site(op, location, layer);
        s.backward_calls += 1;
        s.backward += time;
        s.backward_bytes += bytes as u64;
    });
}

/// One backward pass: its whole time and the part spent in rules.
pub(crate) fn backward_pass(total: Duration, rules: Duration) {
    with(|c| {
        c.backward_overhead += total.saturating_sub(rules);
        c.backward_passes += 1;
    });
}
