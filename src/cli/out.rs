//! The command line's stdout: every line goes through [`line()`], which
//! flushes it (so `| head -1` sees it at once) and turns write errors into
//! [`Error`]s instead of `println!`'s panic. A reader that closed the pipe
//! (`| head`) gives [`Error::StdoutClosed`], on which the program ends
//! quietly with exit 0; any other failure (`> /dev/full`) is an error
//! naming stdout. [`check`] finds a stdout that takes no write at all
//! before a command prints anything.

use lstm_wgpu::error::{Error, Result};
use std::io::Write;

/// Writes `s` and a newline to stdout, flushed.
pub fn line(s: impl std::fmt::Display) -> Result<()> {
    text(&format!("{s}\n"))
}

/// Writes `s` to stdout as it is, flushed (text that streams out as it is
/// made).
pub fn text(s: &str) -> Result<()> {
    let mut o = std::io::stdout().lock();
    o.write_all(s.as_bytes())
        .and_then(|()| o.flush())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => Error::StdoutClosed,
            _ => Error::file("stdout", lstm_wgpu::io::io_msg(&e)),
        })
}

/// Fails at once when stdout refuses every write (`> /dev/full`), so that
/// the command stops with one error line instead of after its progress
/// lines on stderr. An empty write reaches the device and fails there;
/// files, terminals and pipes (open or closed) take it, and a closed
/// stdout is left to [`line()`] as before.
pub fn check() -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        let Ok(fd) = std::io::stdout().as_fd().try_clone_to_owned() else {
            return Ok(());
        };
        std::fs::File::from(fd)
            .write(&[])
            .map_err(|e| Error::file("stdout", lstm_wgpu::io::io_msg(&e)))?;
    }
    Ok(())
}
