use clap::Parser;
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = lstm_wgpu::cli::Cli::parse();
    match lstm_wgpu::cli::run(cli) {
        // `lstm-wgpu predict ... | head -1`: a closed pipe is no error.
        Ok(()) | Err(lstm_wgpu::Error::StdoutClosed) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever the source: wgpu messages span several.
            // A closed stderr cannot be told about anything: no panic.
            let msg = e.to_string();
            let _ = writeln!(
                std::io::stderr(),
                "error: {}",
                msg.split_whitespace().collect::<Vec<_>>().join(" ")
            );
            ExitCode::from(2)
        }
    }
}
