mod cli;

use clap::Parser;
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    match cli::run(cli) {
        // `lstm-wgpu predict ... | head -1`: a closed pipe is no error.
        Ok(()) | Err(lstm_wgpu::Error::StdoutClosed) => ExitCode::SUCCESS,
        Err(e) => {
            let code = match e {
                lstm_wgpu::Error::CheckFailed(_) => 1,
                _ => 2,
            };
            // One line, whatever the source: wgpu messages span several.
            // A closed stderr cannot be told about anything: no panic.
            let msg = e.to_string();
            let _ = writeln!(
                std::io::stderr(),
                "error: {}",
                msg.split_whitespace().collect::<Vec<_>>().join(" ")
            );
            ExitCode::from(code)
        }
    }
}

/// `--help` and `--version` print as clap writes them (exit 0); a usage
/// error is one line, exit 2, like every other refusal.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        return match e.print() {
            Ok(()) if e.kind() != ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                ExitCode::SUCCESS
            }
            _ => ExitCode::from(2),
        };
    }
    if let Some(line) = invalid_value(&e) {
        let _ = writeln!(std::io::stderr(), "error: {line} (see --help)");
        return ExitCode::from(2);
    }
    let text = e.render().to_string();
    let first = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("error: bad arguments")
        .trim();
    let tip = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("tip:"))
        .map(|t| format!(" ({t})"))
        .unwrap_or_default();
    let first = if first.starts_with("error:") {
        first.to_string()
    } else {
        format!("error: {first}")
    };
    let _ = writeln!(std::io::stderr(), "{first}{tip} (see --help)");
    ExitCode::from(2)
}

/// A value outside a flag's named ones, said as the settings' own checks
/// say it (`--norm group: expected none, layer, ...`), the names included:
/// the library's choices refuse a name themselves (their `FromStr`), other
/// flags through clap's list of values.
fn invalid_value(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() == ErrorKind::ValueValidation {
        let own = std::error::Error::source(e)?.downcast_ref::<lstm_wgpu::Error>()?;
        return Some(own.to_string());
    }
    if e.kind() != ErrorKind::InvalidValue {
        return None;
    }
    let (Some(ContextValue::String(arg)), Some(ContextValue::String(value))) = (
        e.get(ContextKind::InvalidArg),
        e.get(ContextKind::InvalidValue),
    ) else {
        return None;
    };
    let flag = arg.split_whitespace().next().unwrap_or(arg);
    let Some(ContextValue::Strings(valid)) = e.get(ContextKind::ValidValue) else {
        return Some(format!("{flag} {value}: not a valid value"));
    };
    Some(format!(
        "{flag} {value}: expected {}",
        lstm_wgpu::run::choice::or_list(valid)
    ))
}
