//! What the binary prints: one JSON object per line on stdout with `--json`, short
//! human lines otherwise. Logs always go to stderr.

use std::io::Write;

use serde_json::{Value, json};

/// Prints events in the chosen format.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Printer {
    /// One JSON object per line on stdout.
    pub(crate) json: bool,
}

impl Printer {
    /// Prints `event` as JSON (with `"event": name`) or as the human `text`.
    pub(crate) fn event(&self, name: &str, fields: Value, text: &str) {
        let mut out = std::io::stdout().lock();
        if self.json {
            let mut obj = json!({ "event": name });
            if let (Some(o), Value::Object(f)) = (obj.as_object_mut(), fields) {
                o.extend(f);
            }
            let _ = writeln!(out, "{obj}");
        } else {
            let _ = writeln!(out, "{text}");
        }
        let _ = out.flush();
    }

    /// Prints an error: an `error` event with `--json`, `error: ...` on stderr otherwise.
    pub(crate) fn error(&self, code: &str, message: &str) {
        if self.json {
            self.event("error", json!({ "code": code, "message": message }), "");
        } else {
            eprintln!("error: {message}");
        }
    }
}
