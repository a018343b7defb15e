//! The `inspect` family: small random graphs (a few parameters and constants, elementwise
//! and matrix ops, an input used twice by one op, remat blocks, custom ops, recorded
//! gradients), tensors named with hostile names (empty, XML's special characters,
//! control characters, newlines, 70 000 characters), before or after a backward that
//! retains the graph or not. `to_dot` and `to_svg` never panic and `to_svg` is well-formed
//! XML; `explain` is `Ok` or a typed error and its `Display` never panics.
//!
//! `to_svg`'s time on large graphs (super-linear in the node count) is no fuzz property:
//! timings are not tested here. A node-count contract (for instance, a plain layout or an
//! error past some size) could be, once one exists.

use ndarray::Array2;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tapegrad::{BackwardOptions, ErrorKind, Tape, Tensor};

use crate::oracle::randn;
use crate::{Family, catch, message};

pub(crate) const FAMILY: Family = Family {
    name: "inspect",
    default: 100,
    run,
    describe,
};

fn describe(seed: u64) -> String {
    format!("{:?}", generate(seed))
}

#[derive(Clone, Copy, Debug)]
enum Step {
    Param,
    Constant,
    /// An op on registers (taken modulo the registers so far).
    Op(usize, usize, usize),
    Name(usize, usize),
}

#[derive(Clone, Debug)]
struct Plan {
    size: usize,
    steps: Vec<Step>,
    names: Vec<String>,
    /// Backward before inspecting: none, retaining the graph, or not.
    backward: Option<bool>,
}

fn hostile(rng: &mut StdRng) -> String {
    match rng.random_range(0..12) {
        0 => String::new(),
        1 => "<&>\"'".into(),
        2 => "a\u{0}b\u{1}\u{7}\u{1b}[31m\u{7f}".into(),
        3 => "line\nbreak\r\ttab".into(),
        4 => "]]><!-- -->".into(),
        5 => "e\u{301}\u{200b}\u{fffe}\u{10ffff}".into(),
        6 => "{}{:?}%s\\".into(),
        7 if rng.random_bool(0.3) => "x".repeat(70_000),
        7 => "y".repeat(rng.random_range(20..400)),
        8 => "W".into(),
        // (the widths of the boxes decide layout-rs's placement)
        _ => "x".repeat(rng.random_range(0..48)),
    }
}

fn generate(seed: u64) -> Plan {
    let mut rng = StdRng::seed_from_u64(seed);
    let size = [1, 1, 2, 3][rng.random_range(0..4)];
    let mut steps = vec![Step::Param];
    let mut names = Vec::new();
    let count = if rng.random_bool(0.2) {
        rng.random_range(24..64)
    } else {
        rng.random_range(1..24)
    };
    for _ in 0..count {
        steps.push(match rng.random_range(0..10) {
            0 => Step::Param,
            1 => Step::Constant,
            2 | 3 => {
                names.push(hostile(&mut rng));
                Step::Name(rng.random_range(0..64), names.len() - 1)
            }
            // the newest node, named
            4 | 5 => {
                names.push(hostile(&mut rng));
                Step::Name(usize::MAX, names.len() - 1)
            }
            _ => Step::Op(
                rng.random_range(0..OPS),
                rng.random_range(0..64),
                rng.random_range(0..64),
            ),
        });
    }
    if rng.random_bool(0.5) {
        // a small DAG of scalars, every node named with a box of its own width: the
        // graphs where layout-rs's placement can break its invariants
        let size = 1;
        let mut steps = vec![Step::Param];
        let mut names = vec![];
        for _ in 0..rng.random_range(4..14) {
            steps.push(match rng.random_range(0..8) {
                0 => Step::Param,
                k => Step::Op(
                    [0, MUL, 3][k % 3],
                    rng.random_range(0..64),
                    rng.random_range(0..64),
                ),
            });
            names.push("x".repeat(rng.random_range(18..42)));
            steps.push(Step::Name(usize::MAX, names.len() - 1));
        }
        return Plan {
            size,
            steps,
            names,
            backward: None,
        };
    }
    let backward = match rng.random_range(0..3) {
        0 => None,
        1 => Some(true),
        _ => Some(false),
    };
    Plan {
        size,
        steps,
        names,
        backward,
    }
}

const OPS: usize = 12;

/// `a∘b` of two nodes (op 1 is `a∘a`): drawn in the small DAGs only, where an op with two
/// distinct parents gives layout-rs's placement the crossings it can fail on.
const MUL: usize = OPS;

fn op<'t>(k: usize, a: Tensor<'t, f64>, b: Tensor<'t, f64>) -> tapegrad::Result<Tensor<'t, f64>> {
    match k {
        0 => a.try_add(b),
        1 => a.try_mul(a),
        2 => a.try_matmul(b),
        3 => Ok(a.tanh()),
        4 => Ok(a.sum()),
        5 => Tensor::try_concat_rows(&[a, b, a]),
        6 => a
            .tape()
            .remat(&[a, b], |x| Ok(x[0].try_mul(x[1])?.sigmoid())),
        7 => crate::rules::program_op(&[a, b], true),
        8 => Ok(a.sigmoid().mul(a)),
        9 => Tensor::try_concat_cols(&[a, b, a, b, a]),
        10 => crate::rules::program_op(&[a, a], false),
        MUL => a.try_mul(b),
        _ => {
            let y = if a.shape() == (1, 1) { a } else { a.sum() };
            a.tape().grad(y, &[a]).map(|g| g[0])
        }
    }
}

fn run(seed: u64) -> bool {
    let plan = generate(seed);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x15);
    let arrays: Vec<Array2<f64>> = (0..plan.steps.len())
        .map(|_| randn((plan.size, plan.size), &mut rng))
        .collect();
    let tape = Tape::new();
    let mut regs: Vec<Tensor<'_, f64>> = Vec::new();
    for (i, step) in plan.steps.iter().enumerate() {
        match *step {
            Step::Param => regs.push(tape.param(&arrays[i])),
            Step::Constant => regs.push(tape.constant(&arrays[i])),
            Step::Op(k, a, b) => {
                let (a, b) = (regs[a % regs.len()], regs[b % regs.len()]);
                if let Ok(t) = op(k, a, b) {
                    regs.push(t);
                }
            }
            Step::Name(r, n) => {
                let r = if r == usize::MAX {
                    regs.len() - 1
                } else {
                    r % regs.len()
                };
                let t = regs[r].named(&plan.names[n]);
                assert_eq!(t.name().as_deref(), Some(plan.names[n].as_str()), "name");
            }
        }
    }
    let root = *regs.last().expect("a parameter first");
    let root = if root.shape() == (1, 1) {
        root
    } else {
        root.sum()
    };
    if let Some(retain) = plan.backward {
        let _ = tape.backward_with(root, BackwardOptions::new().retain_graph(retain));
    }
    crate::all(vec![
        Box::new(|| {
            if let Err(e) = catch(|| tape.to_dot()) {
                panic!("to_dot panicked: {}", message(&*e));
            }
        }),
        Box::new(|| match catch(|| tape.to_svg().drawing()) {
            Ok(Ok(svg)) => {
                if let Err(why) = well_formed(&svg) {
                    panic!("to_svg wrote invalid XML: {why}");
                }
            }
            // a refusal (a drawing too large to lay out), typed
            Ok(Err(_)) => {}
            Err(e) => panic!(
                "to_svg panicked on a graph of {} nodes: {}",
                tape.len(),
                message(&*e)
            ),
        }),
        Box::new(
            || match catch(|| tape.explain(root).map(|e| e.to_string())) {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => assert!(
                    matches!(
                        e.kind(),
                        ErrorKind::BackwardTwice { .. } | ErrorKind::NoGradient
                    ),
                    "explain: {e}"
                ),
                Err(e) => panic!("explain or its Display panicked: {}", message(&*e)),
            },
        ),
    ]);
    false
}

/// What `Tape::to_svg` gives: the SVG, or, where it can refuse a graph, the SVG or an
/// error (so that this family runs on either signature).
trait Drawing {
    fn drawing(self) -> Result<String, String>;
}

impl Drawing for String {
    fn drawing(self) -> Result<String, String> {
        Ok(self)
    }
}

impl<E: std::fmt::Display> Drawing for Result<String, E> {
    fn drawing(self) -> Result<String, String> {
        self.map_err(|e| e.to_string())
    }
}

/// Whether `s` is well-formed XML as far as an SVG needs: only characters XML allows,
/// references that exist, attribute values quoted, elements nested.
fn well_formed(s: &str) -> Result<(), String> {
    if let Some(c) = s.chars().find(|&c| {
        matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}')
    }) {
        return Err(format!("the character {c:?}, which XML does not allow"));
    }
    let mut stack: Vec<String> = Vec::new();
    let mut rest = s;
    let reference = |text: &str| -> Result<(), String> {
        let mut t = text;
        while let Some(i) = t.find('&') {
            t = &t[i + 1..];
            let end = t.find(';').ok_or("an & that starts no reference")?;
            let name = &t[..end];
            let ok = matches!(name, "amp" | "lt" | "gt" | "quot" | "apos")
                || name
                    .strip_prefix("#x")
                    .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
                || name
                    .strip_prefix('#')
                    .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()));
            if !ok {
                return Err(format!("the reference &{name};"));
            }
        }
        Ok(())
    };
    while let Some(open) = rest.find('<') {
        reference(&rest[..open])?;
        rest = &rest[open..];
        if let Some(r) = rest.strip_prefix("<?") {
            rest = &r[r.find("?>").ok_or("an unclosed <?")? + 2..];
        } else if let Some(r) = rest.strip_prefix("<!--") {
            let end = r.find("-->").ok_or("an unclosed comment")?;
            if r[..end].contains("--") {
                return Err("-- inside a comment".into());
            }
            rest = &r[end + 3..];
        } else if let Some(r) = rest.strip_prefix("<!") {
            rest = &r[r.find('>').ok_or("an unclosed <!")? + 1..];
        } else {
            // a tag: up to the first > outside quotes
            let mut quote = None;
            let mut end = None;
            for (i, c) in rest.char_indices().skip(1) {
                match (quote, c) {
                    (None, '"' | '\'') => quote = Some(c),
                    (Some(q), c) if c == q => quote = None,
                    (Some(_), '<') => return Err("< inside an attribute value".into()),
                    (None, '>') => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let end = end.ok_or("an unclosed tag")?;
            let tag = &rest[1..end];
            rest = &rest[end + 1..];
            reference(tag)?;
            if let Some(name) = tag.strip_prefix('/') {
                let top = stack.pop().ok_or(format!("</{name}> closes nothing"))?;
                if top != name.trim() {
                    return Err(format!("</{name}> closes <{top}>"));
                }
            } else {
                let name: String = tag
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != '/')
                    .collect();
                if name.is_empty() {
                    return Err(format!("the tag <{tag}>"));
                }
                if !tag.ends_with('/') {
                    stack.push(name);
                }
            }
        }
    }
    reference(rest)?;
    match stack.pop() {
        Some(open) => Err(format!("<{open}> is never closed")),
        None => Ok(()),
    }
}
