//! The command line's stdout: every line goes through [`line`], which
//! flushes it (so `| head -1` sees it at once) and turns write errors into
//! [`Error`]s instead of `println!`'s panic. A reader that closed the pipe
//! (`| head`) gives [`Error::StdoutClosed`], on which the program ends
//! quietly with exit 0; any other failure (`> /dev/full`) is an error
//! naming stdout.

use lstm_wgpu::error::{Error, Result};
use std::io::Write;

/// Writes `s` and a newline to stdout, flushed.
pub fn line(s: impl std::fmt::Display) -> Result<()> {
    let mut o = std::io::stdout().lock();
    writeln!(o, "{s}")
        .and_then(|()| o.flush())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => Error::StdoutClosed,
            _ => Error::file("stdout", lstm_wgpu::io::io_msg(&e)),
        })
}
