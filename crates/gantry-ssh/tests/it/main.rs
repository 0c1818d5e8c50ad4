//! Integration tests against real peers: OpenSSH's sshd for the client, OpenSSH's ssh/sftp for
//! the server, and gantry against itself.

mod gantry_pair;
mod limits;
mod openssh_client;
mod sshd_server;
mod support;
