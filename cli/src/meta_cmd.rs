//! Commands about the binary itself: `netbore completions`, `netbore man` and
//! `netbore version`. They read the command-line definition and print; nothing else.

use std::io::Write;

use serde_json::json;

use crate::output::Printer;

/// Flags of `netbore completions`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// Prints the completion script for `args.shell` of `command` on stdout.
pub(crate) fn completions(args: CompletionsArgs, mut command: clap::Command) -> anyhow::Result<()> {
    // Into memory first: `generate` panics when its writer fails (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "netbore", &mut script);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)
        .and_then(|()| out.flush())
        .map_err(|e| anyhow::anyhow!("could not write the completion script: {e}"))
}

/// Prints the roff man page of `command` on stdout.
pub(crate) fn man(command: clap::Command) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    clap_mangen::Man::new(command)
        .render(&mut out)
        .and_then(|()| out.flush())
        .map_err(|e| anyhow::anyhow!("could not write the man page: {e}"))
}

/// Prints `netbore X.Y.Z`, or a `version` event with `--json`.
pub(crate) fn version(printer: Printer) -> anyhow::Result<()> {
    let version = env!("CARGO_PKG_VERSION");
    printer.event(
        "version",
        json!({ "version": version }),
        &format!("netbore {version}"),
    );
    Ok(())
}
