//! The local terminal of `gantry ssh`: raw mode (undone however the session ends: return,
//! error, panic unwinding), its size and resizes, and stdin/stdout/stderr as the async streams
//! a transport's interactive shell takes ([`ShellIo`]). Only the binary writes to the terminal,
//! so this lives here once, for every transport (SSH, Docker exec).

use std::io::{IsTerminal as _, Read as _};

use gantry_engine::transport::{ShellIo, TermSize};
use nix::sys::termios::{self, SetArg, Termios};
use tokio::io::AsyncWriteExt as _;

/// The terminal size of stdin, if stdin is a terminal.
fn size() -> Option<TermSize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the pointed-to struct, which lives for the
    // whole call; fd 0 is only read from.
    let rc = unsafe { libc::ioctl(libc::STDIN_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0 && ws.ws_row > 0).then_some(TermSize {
        cols: ws.ws_col,
        rows: ws.ws_row,
    })
}

/// Stdin's terminal in raw mode; the original mode is restored on drop.
pub struct RawMode {
    original: Termios,
}

impl RawMode {
    fn enter() -> std::io::Result<RawMode> {
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

/// This process's stdin, stdout and stderr for an interactive shell: with a pty of the
/// terminal's size and `$TERM` and resizes (SIGWINCH) when stdin is a terminal, which is then in
/// raw mode until the returned guard drops; plain pipes otherwise.
pub fn shell_io() -> std::io::Result<(ShellIo, Option<RawMode>)> {
    let tty = std::io::stdin().is_terminal();
    let (pty, resize, raw) = if tty {
        let term = std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into());
        let initial = size().unwrap_or(TermSize { cols: 80, rows: 24 });
        let mut winch =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            while winch.recv().await.is_some() {
                if let Some(s) = size()
                    && tx.send(s).await.is_err()
                {
                    break;
                }
            }
        });
        (Some((term, initial)), Some(rx), Some(RawMode::enter()?))
    } else {
        (None, None, None)
    };
    // stdin is read on a thread of its own: a blocked read must not hold the exit back.
    let (reader, mut writer) = tokio::io::duplex(64 * 1024);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(n) if n > 0 => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
                _ => break,
            }
        }
    });
    tokio::spawn(async move {
        while let Some(data) = rx.recv().await {
            if writer.write_all(&data).await.is_err() {
                return;
            }
        }
        // End of input: the reader sees end-of-file.
        let _ = writer.shutdown().await;
    });
    Ok((
        ShellIo {
            pty,
            stdin: Box::new(reader),
            stdout: Box::new(tokio::io::stdout()),
            stderr: Box::new(tokio::io::stderr()),
            resize,
        },
        raw,
    ))
}
