//! One response per message: `start`, `define`, `evaluate`, and `{"id": n}` for anything
//! else (`analysis` and kinds this tool does not know).

use std::panic::{AssertUnwindSafe, catch_unwind};

use serde_json::{Value, json};
use tapegrad::inspect::profile;

use crate::runs::Evaluated;

/// With this variable set, every `evaluate` is profiled by op ([`tapegrad::inspect::profile`],
/// summed over its runs) and the table goes to stderr: where the time goes, and the tape's
/// own share. Profiling adds tens of nanoseconds per op, so timings taken with it are not
/// the tool's timings.
pub const PROFILE_VAR: &str = "TAPEGRAD_GRADBENCH_PROFILE";

/// The evals this tool implements, by module name.
const MODULES: &[&str] = &[
    "hello", "lse", "llsq", "ode", "det", "kmeans", "gmm", "lstm", "ba", "ht", "particle", "saddle",
];

/// The response line for one message line.
pub fn respond(line: &str) -> Value {
    let message: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return json!({"id": null, "success": false, "error": format!("bad JSON: {e}")}),
    };
    let id = message.get("id").cloned().unwrap_or(Value::Null);
    let kind = message.get("kind").and_then(Value::as_str).unwrap_or("");
    let module = message.get("module").and_then(Value::as_str).unwrap_or("");
    match kind {
        "start" => json!({"id": id, "tool": "tapegrad"}),
        "define" if MODULES.contains(&module) => json!({"id": id, "success": true}),
        "define" => json!({
            "id": id, "success": false,
            "error": format!("tapegrad-gradbench has no module {module:?}"),
        }),
        "evaluate" => {
            let function = message
                .get("function")
                .and_then(Value::as_str)
                .unwrap_or("");
            let input = message.get("input").unwrap_or(&Value::Null);
            let profiling = std::env::var_os(PROFILE_VAR).is_some();
            if profiling {
                profile::start();
            }
            let result = evaluate_caught(module, function, input);
            if profiling {
                let description = message.get("description").unwrap_or(&Value::Null);
                eprintln!(
                    "== {module}::{function} {description}\n{}",
                    profile::finish()
                );
            }
            match result {
                Ok(Evaluated { output, timings }) => {
                    let timings: Vec<Value> = timings
                        .iter()
                        .map(|ns| json!({"name": "evaluate", "nanoseconds": ns}))
                        .collect();
                    json!({"id": id, "success": true, "output": output, "timings": timings})
                }
                Err(error) => json!({"id": id, "success": false, "error": error}),
            }
        }
        _ => json!({"id": id}),
    }
}

/// [`evaluate`], with a panic turned into an error (the session goes on).
fn evaluate_caught(module: &str, function: &str, input: &Value) -> Result<Evaluated, String> {
    catch_unwind(AssertUnwindSafe(|| evaluate(module, function, input))).unwrap_or_else(|e| {
        let text = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into());
        Err(format!("{module}::{function} panicked: {text}"))
    })
}

/// Runs `module::function` on `input`.
pub fn evaluate(module: &str, function: &str, input: &Value) -> Result<Evaluated, String> {
    match module {
        "hello" => crate::hello::evaluate(function, input),
        "lse" => crate::lse::evaluate(function, input),
        "llsq" => crate::llsq::evaluate(function, input),
        "ode" => crate::ode::evaluate(function, input),
        "det" => crate::det::evaluate(function, input),
        "kmeans" => crate::kmeans::evaluate(function, input),
        "gmm" => crate::gmm::evaluate(function, input),
        "lstm" => crate::lstm::evaluate(function, input),
        "ba" => crate::ba::evaluate(function, input),
        "ht" => crate::ht::evaluate(function, input),
        "particle" => crate::particle::evaluate(function, input),
        "saddle" => crate::saddle::evaluate(function, input),
        _ => Err(format!("no module {module:?}")),
    }
}

/// The error for a function name a module does not have.
pub fn unknown(module: &str, function: &str) -> String {
    format!("{module} has no function {function:?}")
}
