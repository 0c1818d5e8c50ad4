//! The server's limits on connections that never log in: the login grace time and the cap on
//! connections waiting to authenticate. Every local user can reach a node's address, so these
//! are what stop idle sockets from holding a node's descriptors for ever.

use std::time::Duration;

use gantry_ssh::{ServerLimits, Session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{ClientSide, GantryServer};

/// Reads until the server closes the connection (the bound only keeps a broken server from
/// hanging the test). Returns what was read, or `None` if the connection was still open.
async fn read_until_closed(sock: &mut TcpStream, bound: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(bound, async {
        let mut buf = [0u8; 4096];
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| got)
}

/// Waits for the server's version line, so the connection is known to be accepted.
async fn banner(sock: &mut TcpStream) {
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.contains(&b'\n') {
        let n = tokio::time::timeout(Duration::from_secs(20), sock.read(&mut buf))
            .await
            .expect("the server sends its version line")
            .expect("read the version line");
        assert!(n > 0, "closed before sending a version line");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"SSH-2.0-"), "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_unauthenticated_connections_are_closed_after_the_login_grace_time() {
    let client = ClientSide::new();
    let limits = ServerLimits {
        login_grace: Duration::from_secs(1),
        ..ServerLimits::default()
    };
    let server = GantryServer::start_with(vec![client.cfg.key.public_openssh()], limits).await;
    let addr = ("127.0.0.1", server.port);

    // A gantry session logs in, then idles past the grace time: it stays (only connections that
    // never log in are timed out).
    let session = Session::connect(&client.spec("node1", server.port), &client.cfg)
        .await
        .unwrap();

    // A socket that never says anything.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // One that sends its version line and then stalls in the handshake.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled.write_all(b"SSH-2.0-idle\r\n").await.unwrap();

    let got = read_until_closed(&mut silent, Duration::from_secs(30)).await;
    let got = got.expect("a silent connection is still open 30 s after a 1 s login grace time");
    assert!(got.starts_with(b"SSH-2.0-gantry"), "{got:?}");
    assert!(
        read_until_closed(&mut stalled, Duration::from_secs(30))
            .await
            .is_some(),
        "a connection stalled in the handshake is still open 30 s after a 1 s login grace time"
    );

    let out = session.exec_capture("echo still here").await.unwrap();
    assert_eq!(out.stdout, b"still here\n");
    session.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_the_oldest_waiting_connection_makes_room_for_gantry() {
    let client = ClientSide::new();
    let limits = ServerLimits {
        max_unauthenticated: 4,
        ..ServerLimits::default()
    };
    let server = GantryServer::start_with(vec![client.cfg.key.public_openssh()], limits).await;
    let addr = ("127.0.0.1", server.port);

    let mut idle = Vec::new();
    for _ in 0..10 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        banner(&mut s).await;
        idle.push(s);
    }
    // Ten idle sockets held, a cap of four: gantry still gets in.
    let session = Session::connect(&client.spec("node1", server.port), &client.cfg)
        .await
        .unwrap();
    let out = session.exec_capture("echo in").await.unwrap();
    assert_eq!(out.stdout, b"in\n");

    // The oldest were closed to make room; the newest still wait (until the grace time).
    assert!(
        read_until_closed(&mut idle[0], Duration::from_secs(30))
            .await
            .is_some(),
        "the oldest idle connection was not closed"
    );
    let mut buf = [0u8; 16];
    match idle[9].try_read(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the newest idle connection was closed: {other:?}"),
    }
    session.close().await;
    server.stop().await;
}
