//! gantry's client against gantry's server, in-process.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use gantry_ssh::{OutputSink, Session};
use russh::keys::PrivateKeyWithHashAlg;
use russh::{ChannelMsg, Sig};

use crate::support::{ClientSide, GantryServer, current_user};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_stdin_signal_exit_and_transfers() {
    let client = ClientSide::new();
    let server = GantryServer::start(vec![client.cfg.key.public_openssh()]).await;
    let s = Session::connect(&client.spec("node1", server.port), &client.cfg)
        .await
        .unwrap();

    let out = s
        .exec_capture("echo $GANTRY_NODE; echo err >&2; exit 3")
        .await
        .unwrap();
    assert_eq!(out.status.code, Some(3));
    assert_eq!(out.stdout, b"node1\n");
    assert_eq!(out.stderr, b"err\n");

    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 241) as u8).collect();
    struct Count(usize);
    impl OutputSink for Count {
        fn stdout(&mut self, d: &[u8]) {
            self.0 += d.len();
        }
        fn stderr(&mut self, _: &[u8]) {}
    }
    let mut count = Count(0);
    let st = s.exec("cat", Some(&big), &mut count).await.unwrap();
    assert!(st.success());
    assert_eq!(count.0, big.len());

    let killed = s.exec_capture("kill -TERM $$").await.unwrap();
    assert_eq!(killed.status.signal.as_deref(), Some("TERM"));

    // A background process holding the output pipe does not keep the channel open.
    let started = std::time::Instant::now();
    let bg = s.exec_capture("sleep 5 & echo started").await.unwrap();
    assert!(bg.status.success());
    assert_eq!(bg.stdout, b"started\n");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    let local = client.dir.path().join("tool.sh");
    std::fs::write(&local, b"#!/bin/sh\necho tool\n").unwrap();
    std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o751)).unwrap();
    assert_eq!(s.upload(&local, "bin-tool.sh").await.unwrap(), 20);
    let remote = server.workdir.path().join("bin-tool.sh");
    assert_eq!(
        std::fs::metadata(&remote).unwrap().permissions().mode() & 0o7777,
        0o751
    );
    let run = s.exec_capture("./bin-tool.sh").await.unwrap();
    assert_eq!(run.stdout, b"tool\n");
    let back = client.dir.path().join("back.sh");
    assert_eq!(s.download("bin-tool.sh", &back).await.unwrap(), 20);
    assert_eq!(
        std::fs::read(&back).unwrap(),
        std::fs::read(&local).unwrap()
    );
    s.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_keeps_permission_bits_but_never_setuid_setgid_or_sticky() {
    let client = ClientSide::new();
    let server = GantryServer::start(vec![client.cfg.key.public_openssh()]).await;
    let s = Session::connect(&client.spec("node1", server.port), &client.cfg)
        .await
        .unwrap();
    for (name, remote_mode, local_mode) in [
        ("suid", 0o4755, 0o755),
        ("sgid", 0o2750, 0o750),
        ("sticky", 0o1777, 0o777),
        ("plain", 0o640, 0o640),
    ] {
        let remote = server.workdir.path().join(name);
        std::fs::write(&remote, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&remote, std::fs::Permissions::from_mode(remote_mode)).unwrap();
        let local = client.dir.path().join(name);
        s.download(name, &local).await.unwrap();
        assert_eq!(
            std::fs::metadata(&local).unwrap().permissions().mode() & 0o7777,
            local_mode,
            "{name}: remote mode {remote_mode:o}"
        );
    }
    s.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_and_channels() {
    let client = ClientSide::new();
    let server = GantryServer::start(vec![client.cfg.key.public_openssh()]).await;
    let conns = (0..10).map(|c| {
        let spec = client.spec("node1", server.port);
        let cfg = client.cfg.clone();
        tokio::spawn(async move {
            let s = Arc::new(Session::connect(&spec, &cfg).await.unwrap());
            let runs = (0..10).map(|i| {
                let s = s.clone();
                async move { s.exec_capture(&format!("echo {c}-{i}")).await.unwrap() }
            });
            for (i, out) in futures::future::join_all(runs)
                .await
                .into_iter()
                .enumerate()
            {
                assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{c}-{i}\n"));
            }
            s.close().await;
        })
    });
    for j in futures::future::join_all(conns).await {
        j.unwrap();
    }
    server.stop().await;
}

struct AnyHost;
impl russh::client::Handler for AnyHost {
    type Error = russh::Error;
    async fn check_server_key(
        &mut self,
        _: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// The server forwards a client `signal` request to the child's process group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_request_reaches_process_group() {
    let client = ClientSide::new();
    let server = GantryServer::start(vec![client.cfg.key.public_openssh()]).await;
    let mut h = russh::client::connect(
        Arc::new(russh::client::Config::default()),
        ("127.0.0.1", server.port),
        AnyHost,
    )
    .await
    .unwrap();
    let auth = h
        .authenticate_publickey(
            current_user(),
            PrivateKeyWithHashAlg::new(Arc::new(client.cfg.key.private_key().clone()), None),
        )
        .await
        .unwrap();
    assert!(auth.success());
    let mut ch = h.channel_open_session().await.unwrap();
    // The child of the shell is in the same group and must die too: the marker never appears.
    ch.exec(true, "sleep 30; echo not-killed").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    ch.signal(Sig::INT).await.unwrap();
    let mut signal = None;
    let mut out = Vec::new();
    let deadline = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(msg) = ch.wait().await {
            match msg {
                ChannelMsg::ExitSignal { signal_name, .. } => signal = Some(signal_name),
                ChannelMsg::ExitStatus { exit_status } => {
                    signal.get_or_insert(Sig::Custom(format!("exit {exit_status}")));
                }
                ChannelMsg::Data { data } => out.extend_from_slice(&data),
                _ => {}
            }
        }
    })
    .await;
    assert!(deadline.is_ok(), "channel did not finish after the signal");
    assert!(!String::from_utf8_lossy(&out).contains("not-killed"));
    assert!(
        matches!(signal, Some(Sig::INT))
            || matches!(&signal, Some(Sig::Custom(s)) if s == "exit 130"),
        "{signal:?}"
    );
    server.stop().await;
}

/// A key written into the server's authorized_keys file is accepted at the next login and the
/// key it replaces is refused, without restarting the server (how the project key rotates on
/// a local node); an unreadable file authorizes nobody; without a file the configured list
/// applies again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorized_keys_file_replaces_the_configured_keys_while_it_exists() {
    let old = ClientSide::new();
    let new = ClientSide::new();
    let server = GantryServer::start(vec![old.cfg.key.public_openssh()]).await;
    let login = |c: &ClientSide| {
        let spec = c.spec("node1", server.port);
        let cfg = c.cfg.clone();
        async move { Session::connect(&spec, &cfg).await }
    };
    assert!(login(&old).await.is_ok());
    assert!(matches!(
        login(&new).await.err(),
        Some(gantry_ssh::SshError::AuthRejected { .. })
    ));

    let ssh_dir = server.workdir.path().join(".ssh");
    std::fs::create_dir_all(&ssh_dir).unwrap();
    let file = ssh_dir.join("authorized_keys");
    std::fs::write(
        &file,
        format!(
            "# rotated\nnot a key at all\n{}\n",
            new.cfg.key.public_openssh()
        ),
    )
    .unwrap();
    let s = login(&new).await.expect("the new key logs in");
    assert_eq!(s.exec_capture("echo hi").await.unwrap().stdout, b"hi\n");
    s.close().await;
    assert!(
        matches!(
            login(&old).await.err(),
            Some(gantry_ssh::SshError::AuthRejected { .. })
        ),
        "the old key is refused once the file no longer lists it"
    );

    // Unreadable (a directory in its place): nobody, not the configured list.
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir(&file).unwrap();
    assert!(login(&old).await.is_err());
    assert!(login(&new).await.is_err());
    std::fs::remove_dir(&file).unwrap();
    assert!(login(&old).await.is_ok(), "no file: the configured keys");
    server.stop().await;
}
