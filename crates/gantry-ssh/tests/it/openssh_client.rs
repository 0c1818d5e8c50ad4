//! OpenSSH's `ssh` and `sftp` against gantry's server.

use std::process::Stdio;

use gantry_ssh::{KeyPair, Session};
use tokio::process::Command;

use crate::support::{ClientSide, GantryServer, current_user, openssh_opts, require};

async fn ssh(
    client: &ClientSide,
    key: &std::path::Path,
    port: u16,
    extra: &[&str],
    cmd: &str,
) -> std::process::Output {
    Command::new("ssh")
        .args(openssh_opts(
            key,
            &client.dir.path().join("ssh_known_hosts"),
            "accept-new",
        ))
        .args(extra)
        .args(["-p", &port.to_string()])
        .arg(format!("{}@127.0.0.1", current_user()))
        .arg(cmd)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run ssh")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_exec_exit_code_env_pty_and_wrong_key() {
    if !require("/usr/bin/ssh") {
        return;
    }
    let client = ClientSide::new();
    let server = GantryServer::start(vec![client.cfg.key.public_openssh()]).await;

    let out = ssh(
        &client,
        &client.key_path,
        server.port,
        &[],
        "echo hi; echo oops >&2; exit 7",
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(7),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"hi\n");
    assert_eq!(out.stderr, b"oops\n");

    // OpenSSH pinned the host key under the alias; the line format is the one gantry writes.
    let pinned = std::fs::read_to_string(client.dir.path().join("ssh_known_hosts")).unwrap();
    assert!(
        pinned.starts_with("node1 ssh-ed25519 "),
        "unexpected known_hosts: {pinned}"
    );
    let key_part = pinned.trim().strip_prefix("node1 ").unwrap();
    assert!(server.host_key.public_openssh().starts_with(key_part));

    let out = ssh(
        &client,
        &client.key_path,
        server.port,
        &[],
        "echo $GANTRY_NODE; pwd",
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let real_workdir = std::fs::canonicalize(server.workdir.path()).unwrap();
    assert_eq!(text, format!("node1\n{}\n", real_workdir.display()));

    let out = ssh(
        &client,
        &client.key_path,
        server.port,
        &["-tt"],
        "tty; exit 4",
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("/dev/pts/"),
        "tty said {text:?}, stderr {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(4));

    // An interactive shell on a pty, driven by piped keystrokes.
    let mut child = Command::new("ssh")
        .args(openssh_opts(
            &client.key_path,
            &client.dir.path().join("ssh_known_hosts"),
            "accept-new",
        ))
        .args(["-tt", "-p", &server.port.to_string()])
        .arg(format!("{}@127.0.0.1", current_user()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"echo $((6*7))x\nexit 5\n").await.unwrap();
        // Keep stdin open until the shell exits: a pty has no half-close.
        let out =
            tokio::time::timeout(std::time::Duration::from_secs(20), child.wait_with_output())
                .await
                .expect("interactive shell finished")
                .unwrap();
        drop(stdin);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("42x"), "shell output {text:?}");
        assert_eq!(out.status.code(), Some(5), "shell output {text:?}");
    }

    let stranger = client.dir.path().join("stranger");
    KeyPair::load_or_generate(&stranger).unwrap();
    let out = ssh(&client, &stranger, server.port, &[], "echo should-not-run").await;
    assert_eq!(out.status.code(), Some(255));
    assert!(out.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_batch_put_get_round_trip() {
    if !require("/usr/bin/sftp") {
        return;
    }
    let client = ClientSide::new();
    let server = GantryServer::start(vec![client.cfg.key.public_openssh()]).await;
    let local = client.dir.path().join("up.txt");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&local, &data).unwrap();
    let back = client.dir.path().join("down.txt");
    let batch = client.dir.path().join("batch");
    std::fs::write(
        &batch,
        format!(
            "mkdir sub\nput {} sub/up.txt\nls -l sub\nget sub/up.txt {}\nrename sub/up.txt sub/moved.txt\nrm sub/moved.txt\nrmdir sub\n",
            local.display(),
            back.display()
        ),
    )
    .unwrap();
    let out = Command::new("sftp")
        .args(openssh_opts(
            &client.key_path,
            &client.dir.path().join("ssh_known_hosts"),
            "accept-new",
        ))
        .args(["-P", &server.port.to_string(), "-b"])
        .arg(&batch)
        .arg(format!("{}@127.0.0.1", current_user()))
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run sftp");
    assert!(
        out.status.success(),
        "sftp failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&back).unwrap(), data);
    assert!(String::from_utf8_lossy(&out.stdout).contains("up.txt"));
    assert!(!server.workdir.path().join("sub").exists());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gantry_pin_is_accepted_by_openssh_strict_checking() {
    if !require("/usr/bin/ssh") {
        return;
    }
    let client = ClientSide::new();
    let server = GantryServer::start(vec![client.cfg.key.public_openssh()]).await;
    Session::connect(&client.spec("node1", server.port), &client.cfg)
        .await
        .unwrap()
        .close()
        .await;
    let out = Command::new("ssh")
        .args(openssh_opts(
            &client.key_path,
            client.cfg.known_hosts.path(),
            "yes",
        ))
        .args(["-p", &server.port.to_string()])
        .arg(format!("{}@127.0.0.1", current_user()))
        .arg("echo trusted")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"trusted\n");
    server.stop().await;
}
