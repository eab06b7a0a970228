//! `netbore config add-key`: sets `key = "..."` in the config file and keeps every
//! other byte of it as written (comments, order, spacing).

use std::path::PathBuf;

use netbore_control::private_fs;
use serde_json::json;
use toml::de::{DeTable, DeValue};

use super::file::{Problem, line_column, syntax_problem};
use crate::output::Printer;

/// Flags of `netbore config add-key`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct AddKeyArgs {
    /// The API key (`netbore key create` prints one).
    #[arg(env = "NETBORE_KEY", hide_env_values = true)]
    key: String,
    /// The config file (default: $XDG_CONFIG_HOME/netbore/netbore.toml or
    /// ~/.config/netbore/netbore.toml; %APPDATA%\netbore\netbore.toml on Windows).
    #[arg(long, env = "NETBORE_CONFIG")]
    config: Option<PathBuf>,
}

/// Runs `netbore config add-key`.
pub(crate) fn run(args: AddKeyArgs, printer: Printer) -> anyhow::Result<()> {
    let key = args.key.trim();
    if key.is_empty() {
        anyhow::bail!("the key is empty; give the one `netbore key create` printed");
    }
    let path = args.config.unwrap_or_else(super::default_path);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => anyhow::bail!(
            "could not read the config file {}: {e}; check that it is a file you may read",
            path.display()
        ),
    };
    let updated = with_key(&text, key).map_err(|problem| {
        let (line, column) = line_column(&text, problem.span.start);
        anyhow::anyhow!(
            "{}:{line}:{column}: {}; fix that before adding the key",
            path.display(),
            problem.message
        )
    })?;
    // Owner-only (0600) whatever the umask, its directory 0700 if new, replaced whole
    // by a rename so a crash leaves the old file or the new one.
    private_fs::write(&path, updated.as_bytes()).map_err(|e| {
        anyhow::anyhow!(
            "could not write the config file {}: {e}; check that its directory is writable",
            path.display()
        )
    })?;
    printer.event(
        "key_saved",
        json!({ "file": path.display().to_string() }),
        &format!("Key saved to {}", path.display()),
    );
    Ok(())
}

/// `text` with its top-level `key` set to `key`; every other byte is kept.
fn with_key(text: &str, key: &str) -> Result<String, Problem> {
    let root = DeTable::parse(text).map_err(|e| syntax_problem(&e))?;
    let quoted = quote(key);
    if let Some(value) = root.get_ref().get("key") {
        let DeValue::String(_) = value.get_ref() else {
            return Err(Problem {
                span: value.span(),
                message:
                    "key holds something other than a string; write key = \"...\" or remove it"
                        .into(),
            });
        };
        let span = value.span();
        return Ok(format!(
            "{}{quoted}{}",
            &text[..span.start],
            &text[span.end..]
        ));
    }
    // Before the first line that is neither blank nor a comment: still at the top
    // level, where a table header cannot yet have opened a table.
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if !trimmed.is_empty() && !trimmed.starts_with('#') {
            break;
        }
        at += line.len();
    }
    let (head, rest) = text.split_at(at);
    let mut out = String::with_capacity(text.len() + quoted.len() + 8);
    out.push_str(head);
    if !head.is_empty() && !head.ends_with('\n') {
        out.push('\n');
    }
    out.push_str("key = ");
    out.push_str(&quoted);
    out.push('\n');
    if rest.starts_with('[') {
        out.push('\n');
    }
    out.push_str(rest);
    Ok(out)
}

/// `s` as a TOML basic string, quotes included.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(text: &str) -> Option<String> {
        super::super::file::parse(text).unwrap().key
    }

    #[test]
    fn a_new_key_goes_above_the_first_table_and_the_rest_is_kept() {
        let text = "# my tunnels\n\n[tunnels.web] # the site\nproto = \"http\"\naddr = 8080\n";
        let out = with_key(text, "nb_1").unwrap();
        assert_eq!(
            out,
            "# my tunnels\n\nkey = \"nb_1\"\n\n[tunnels.web] # the site\nproto = \"http\"\naddr = 8080\n"
        );
        assert_eq!(key_of(&out).as_deref(), Some("nb_1"));
        assert_eq!(with_key("", "k").unwrap(), "key = \"k\"\n");
    }

    #[test]
    fn an_old_key_is_replaced_in_place() {
        let text = "server = \"http://localhost:7834\"\nkey = 'old'  # mine\n[tunnels.a]\nproto = \"tcp\"\naddr = 1\n";
        let out = with_key(text, "new").unwrap();
        assert_eq!(out, text.replace("'old'", "\"new\""));
    }

    #[test]
    fn any_key_survives_the_quoting() {
        for key in ["a\"b", "c\\d", "tab\there", "bell\u{7}", "ünï"] {
            assert_eq!(key_of(&with_key("", key).unwrap()).as_deref(), Some(key));
        }
    }

    #[test]
    fn a_broken_file_is_left_alone() {
        assert!(with_key("[tunnels.web\n", "k").is_err());
        assert!(with_key("[key]\na = 1\n", "k").is_err());
    }
}
