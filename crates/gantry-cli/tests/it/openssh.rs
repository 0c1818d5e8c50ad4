//! OpenSSH's own clients (`ssh`, `sftp`) against local nodes, configured only by
//! `gantry ssh-config`.

use std::process::Command;
use std::time::Duration;

use crate::support::*;

const SSH: &str = "/usr/bin/ssh";
const SFTP: &str = "/usr/bin/sftp";

fn ssh_cmd(tool: &str, config: &std::path::Path) -> Command {
    let mut c = Command::new(tool);
    c.arg("-F")
        .arg(config)
        .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"])
        .stdin(std::process::Stdio::null());
    c
}

#[test]
fn openssh_client_interop() {
    if !require_tool(SSH) || !require_tool(SFTP) {
        return;
    }
    let g = Gantry::new();
    let c = "interop";
    let spec = g.simple_spec(c, 3);
    g.run(&["up", "-f", spec.to_str().unwrap()]).ok();

    let cfg_text = g.run(&["ssh-config", c]).ok().stdout;
    for i in 1..=3 {
        assert!(
            cfg_text.contains(&format!("Host {c}-db-{i}\n")),
            "{cfg_text}"
        );
    }
    // Only loopback endpoints are offered.
    for line in cfg_text
        .lines()
        .filter(|l| l.trim_start().starts_with("HostName "))
    {
        let host = line.trim_start().trim_start_matches("HostName ").trim();
        assert!(is_loopback(host), "HostName {host} is not in 127/8");
    }
    let cfg = g.work().join("ssh_config");
    std::fs::write(&cfg, &cfg_text).unwrap();
    let t = Duration::from_secs(60);

    // exec
    let mut cmd = ssh_cmd(SSH, &cfg);
    cmd.args([&format!("{c}-db-1"), "hostname"]);
    let out = g.spawn_cmd(cmd, "ssh hostname".into()).wait(t).ok();
    assert_eq!(out.stdout, format!("{c}-db-1\n"), "{}", out.stderr);

    // exit status passes through
    let mut cmd = ssh_cmd(SSH, &cfg);
    cmd.args([&format!("{c}-db-2"), "exit 7"]);
    g.spawn_cmd(cmd, "ssh exit 7".into()).wait(t).expect(7);

    // sftp put + get round trip, in batch mode
    let data = payload(200_000, 42);
    let up_file = g.work().join("up.bin");
    let down_file = g.work().join("down.bin");
    write_file(&up_file, &data);
    let batch = g.work().join("batch");
    std::fs::write(
        &batch,
        format!(
            "put {} sftp.bin\nget sftp.bin {}\n",
            up_file.display(),
            down_file.display()
        ),
    )
    .unwrap();
    let mut cmd = ssh_cmd(SFTP, &cfg);
    cmd.arg("-b").arg(&batch).arg(format!("{c}-db-3"));
    g.spawn_cmd(cmd, "sftp -b".into()).wait(t).ok();
    assert!(
        std::fs::read(&down_file).unwrap() == data,
        "sftp round trip changed the bytes"
    );
    // the upload landed on node 3 (and only there)
    let out = g
        .run(&["run", c, "--", "wc -c < sftp.bin 2>/dev/null || echo none"])
        .ok();
    assert!(
        out.stdout.contains(&format!("{c}-db-3 | {}", data.len())),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!("{c}-db-1 | none")),
        "{}",
        out.stdout
    );

    // a forced pty
    let mut cmd = ssh_cmd(SSH, &cfg);
    cmd.args(["-tt", &format!("{c}-db-1"), "tty"]);
    let out = g.spawn_cmd(cmd, "ssh -tt tty".into()).wait(t).ok();
    assert!(
        out.stdout.trim().starts_with("/dev/pts/"),
        "tty printed {:?} (stderr {:?})",
        out.stdout,
        out.stderr
    );

    g.run(&["destroy", c, "--yes"]).ok();
}
