//! Everything SSH in gantry, both ends: keys, host-key pinning, client sessions (exec, SFTP,
//! interactive shell) and the SSH server of the local node agent.
//!
//! This is the only crate that speaks the SSH protocol (an architecture invariant); the rest of
//! gantry sees [`Session`], [`serve`] and [`SshError`].

mod client;
mod error;
mod keys;
mod known_hosts;
mod server;
mod sftp;

pub use client::{ClientConfig, ConnectSpec, ExitStatus, Output, OutputSink, Session, ShellIo};
pub use error::SshError;
pub use keys::KeyPair;
pub use known_hosts::{HostKeyCheck, KnownHosts};
pub use server::{ServerConfig, ServerLimits, serve};
