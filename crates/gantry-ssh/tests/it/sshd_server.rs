//! gantry's client against a real OpenSSH sshd.

use std::os::unix::fs::PermissionsExt;

use gantry_ssh::{OutputSink, Session, SshError};

use crate::support::{ClientSide, Sshd, free_port};

#[derive(Default)]
struct Collect {
    out: Vec<u8>,
    err: Vec<u8>,
}

impl OutputSink for Collect {
    fn stdout(&mut self, data: &[u8]) {
        self.out.extend_from_slice(data);
    }
    fn stderr(&mut self, data: &[u8]) {
        self.err.extend_from_slice(data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_exit_codes_stderr_stdin_and_signal() {
    let client = ClientSide::new();
    let Some(sshd) = Sshd::start(&client.cfg.key.public_openssh()) else {
        return;
    };
    let s = Session::connect(&client.spec("n1", sshd.port), &client.cfg)
        .await
        .unwrap();

    let ok = s.exec_capture("echo hello").await.unwrap();
    assert!(ok.status.success(), "{:?}", ok.status);
    assert_eq!(ok.stdout, b"hello\n");

    let three = s
        .exec_capture("echo out; echo err >&2; exit 3")
        .await
        .unwrap();
    assert_eq!(three.status.code, Some(3));
    assert!(!three.status.success());
    assert_eq!(three.stdout, b"out\n");
    assert_eq!(three.stderr, b"err\n");

    let mut sink = Collect::default();
    let st = s
        .exec("cat; echo done >&2", Some(b"piped input"), &mut sink)
        .await
        .unwrap();
    assert_eq!(st.code, Some(0));
    assert_eq!(sink.out, b"piped input");
    assert_eq!(sink.err, b"done\n");

    let killed = s.exec_capture("kill -TERM $$").await.unwrap();
    assert_eq!(
        killed.status.signal.as_deref(),
        Some("TERM"),
        "{:?}",
        killed.status
    );
    assert!(!killed.status.success());
    s.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_download_round_trip_keeps_mode() {
    let client = ClientSide::new();
    let Some(sshd) = Sshd::start(&client.cfg.key.public_openssh()) else {
        return;
    };
    let s = Session::connect(&client.spec("n1", sshd.port), &client.cfg)
        .await
        .unwrap();
    let local = client.dir.path().join("payload.bin");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&local, &data).unwrap();
    std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o750)).unwrap();
    let remote = sshd.dir.path().join("remote.bin");
    let remote = remote.to_str().unwrap();
    assert_eq!(s.upload(&local, remote).await.unwrap(), data.len() as u64);
    assert_eq!(std::fs::read(remote).unwrap(), data);
    assert_eq!(
        std::fs::metadata(remote).unwrap().permissions().mode() & 0o7777,
        0o750
    );
    let back = client.dir.path().join("back.bin");
    assert_eq!(s.download(remote, &back).await.unwrap(), data.len() as u64);
    assert_eq!(std::fs::read(&back).unwrap(), data);
    assert_eq!(
        std::fs::metadata(&back).unwrap().permissions().mode() & 0o7777,
        0o750
    );
    let missing = s
        .download("/nonexistent/file", &client.dir.path().join("x"))
        .await
        .unwrap_err();
    assert!(
        matches!(missing, SshError::RemoteMissing { .. }),
        "{missing}"
    );
    assert!(!missing.is_transport(), "{missing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_contact_pins_and_changed_key_is_refused() {
    let client = ClientSide::new();
    let Some(a) = Sshd::start(&client.cfg.key.public_openssh()) else {
        return;
    };
    let Some(b) = Sshd::start(&client.cfg.key.public_openssh()) else {
        return;
    };
    assert_eq!(client.cfg.known_hosts.pinned("n1").unwrap(), None);
    let s = Session::connect(&client.spec("n1", a.port), &client.cfg)
        .await
        .unwrap();
    s.close().await;
    let pinned = client.cfg.known_hosts.pinned("n1").unwrap().unwrap();
    assert!(a.host_public_key().starts_with(&pinned), "{pinned}");
    let text = std::fs::read_to_string(client.cfg.known_hosts.path()).unwrap();
    assert_eq!(text, format!("n1 {pinned}\n"));

    // Same alias, different machine key.
    let err = Session::connect(&client.spec("n1", b.port), &client.cfg)
        .await
        .unwrap_err();
    match &err {
        SshError::HostKeyChanged {
            alias, known_hosts, ..
        } => {
            assert_eq!(alias, "n1");
            assert_eq!(known_hosts, client.cfg.known_hosts.path());
        }
        other => panic!("expected HostKeyChanged, got {other:?}"),
    }
    assert!(!err.is_transport());
    // The pin is unchanged, and forgetting it lets the new key be pinned.
    assert_eq!(
        client.cfg.known_hosts.pinned("n1").unwrap().unwrap(),
        pinned
    );
    client.cfg.known_hosts.forget("n1").unwrap();
    Session::connect(&client.spec("n1", b.port), &client.cfg)
        .await
        .unwrap()
        .close()
        .await;
    assert!(
        b.host_public_key()
            .starts_with(&client.cfg.known_hosts.pinned("n1").unwrap().unwrap())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_port_is_transport_error() {
    let client = ClientSide::new();
    let err = Session::connect(&client.spec("n1", free_port()), &client.cfg)
        .await
        .unwrap_err();
    assert!(matches!(err, SshError::Connect { .. }), "{err:?}");
    assert!(err.is_transport());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_is_auth_rejected_not_transport() {
    let client = ClientSide::new();
    let other = gantry_ssh::KeyPair::generate();
    let Some(sshd) = Sshd::start(&other.public_openssh()) else {
        return;
    };
    let err = Session::connect(&client.spec("n1", sshd.port), &client.cfg)
        .await
        .unwrap_err();
    assert!(matches!(err, SshError::AuthRejected { .. }), "{err:?}");
    assert!(!err.is_transport());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_channels_on_one_session() {
    let client = ClientSide::new();
    let Some(sshd) = Sshd::start(&client.cfg.key.public_openssh()) else {
        return;
    };
    let s = Session::connect(&client.spec("n1", sshd.port), &client.cfg)
        .await
        .unwrap();
    let runs = (0..20).map(|i| {
        let s = &s;
        async move { s.exec_capture(&format!("sleep 0.2; echo {i}")).await }
    });
    let outputs = futures::future::join_all(runs).await;
    for (i, out) in outputs.into_iter().enumerate() {
        let out = out.unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{i}\n"));
    }
}
