use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = lstm_wgpu::cli::Cli::parse();
    match lstm_wgpu::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever the source: wgpu messages span several.
            let msg = e.to_string();
            eprintln!(
                "error: {}",
                msg.split_whitespace().collect::<Vec<_>>().join(" ")
            );
            ExitCode::from(2)
        }
    }
}
