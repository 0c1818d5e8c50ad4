//! The local terminal, for [`Session::shell`](crate::Session::shell): its size, and raw mode
//! that is undone however the shell ends (return, error, panic unwinding).

use nix::sys::termios::{self, SetArg, Termios};

/// The terminal size of stdin as (columns, rows), if stdin is a terminal.
pub(crate) fn size() -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the pointed-to struct, which lives for the
    // whole call; fd 0 is only read from.
    let rc = unsafe { libc::ioctl(libc::STDIN_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0 && ws.ws_row > 0).then_some((ws.ws_col, ws.ws_row))
}

/// Puts stdin's terminal in raw mode; the original mode is restored on drop.
pub(crate) struct RawMode {
    original: Termios,
}

impl RawMode {
    pub(crate) fn enter() -> std::io::Result<RawMode> {
        let stdin = std::io::stdin();
        let original = termios::tcgetattr(&stdin)?;
        let mut raw = original.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&stdin, SetArg::TCSADRAIN, &raw)?;
        Ok(RawMode { original })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSADRAIN, &self.original);
    }
}
