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

const SCP: &str = "/usr/bin/scp";

/// `scp` (over SFTP since OpenSSH 9.0) in both directions, the sftp subsystem's own exit
/// status, and an `sftp -b` batch of every common operation, each effect checked on the node's
/// disk.
#[test]
fn scp_and_every_common_sftp_operation_succeed() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    if !require_tool(SSH) || !require_tool(SFTP) || !require_tool(SCP) {
        return;
    }
    let g = Gantry::new();
    let c = "scp";
    let spec = g.simple_spec(c, 1);
    g.run(&["up", "-f", spec.to_str().unwrap()]).ok();
    let node = format!("{c}-db-1");
    let cfg = g.work().join("ssh_config");
    std::fs::write(&cfg, g.run(&["ssh-config", c]).ok().stdout).unwrap();
    let home = g.cluster_dir(c).join(&node).join("home");
    let t = Duration::from_secs(60);

    // scp up and down: exit 0, the same bytes.
    let data = payload(300_000, 7);
    let local = g.work().join("local.bin");
    write_file(&local, &data);
    let mut cmd = ssh_cmd(SCP, &cfg);
    cmd.arg(&local).arg(format!("{node}:scp.bin"));
    g.spawn_cmd(cmd, "scp to the node".into()).wait(t).ok();
    assert!(
        std::fs::read(home.join("scp.bin")).unwrap() == data,
        "scp up changed the bytes"
    );
    let back = g.work().join("back.bin");
    let mut cmd = ssh_cmd(SCP, &cfg);
    cmd.arg(format!("{node}:scp.bin")).arg(&back);
    g.spawn_cmd(cmd, "scp from the node".into()).wait(t).ok();
    assert!(
        std::fs::read(&back).unwrap() == data,
        "scp down changed the bytes"
    );

    // The subsystem channel ends with exit status 0 (OpenSSH's ssh exits 255 without one).
    let mut cmd = ssh_cmd(SSH, &cfg);
    cmd.args(["-s", &node, "sftp"]);
    g.spawn_cmd(cmd, "ssh -s sftp".into()).wait(t).ok();

    // Every common operation in one batch; sftp -b stops at the first failure.
    let down = g.work().join("down.bin");
    let batch = g.work().join("batch");
    std::fs::write(
        &batch,
        format!(
            "put {local} up.bin\n\
             get up.bin {down}\n\
             mkdir d\n\
             cd d\n\
             put {local} inner.bin\n\
             cd ..\n\
             put {local} doomed.bin\n\
             rm d/inner.bin\n\
             rmdir d\n\
             rm doomed.bin\n\
             put -f {local} synced.bin\n\
             rename up.bin moved.bin\n\
             chmod 640 moved.bin\n\
             ln -s moved.bin soft.bin\n\
             symlink moved.bin soft2.bin\n\
             ln moved.bin hard.bin\n\
             ls -l\n\
             df\n\
             df -i\n",
            local = local.display(),
            down = down.display(),
        ),
    )
    .unwrap();
    let mut cmd = ssh_cmd(SFTP, &cfg);
    cmd.arg("-b").arg(&batch).arg(&node);
    let out = g.spawn_cmd(cmd, "sftp -b".into()).wait(t).ok();
    assert!(
        std::fs::read(&down).unwrap() == data,
        "get changed the bytes"
    );
    assert!(
        std::fs::read(home.join("synced.bin")).unwrap() == data,
        "put -f (fsync) changed the bytes"
    );
    assert!(!home.join("d").exists(), "rmdir left d");
    assert!(!home.join("doomed.bin").exists(), "rm left doomed.bin");
    assert!(!home.join("up.bin").exists(), "rename left up.bin");
    let moved = home.join("moved.bin");
    assert!(
        std::fs::read(&moved).unwrap() == data,
        "rename lost the bytes"
    );
    let meta = std::fs::metadata(&moved).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640, "chmod");
    for link in ["soft.bin", "soft2.bin"] {
        assert_eq!(
            std::fs::read_link(home.join(link)).unwrap(),
            std::path::PathBuf::from("moved.bin"),
            "{link} is a symbolic link to moved.bin, as given"
        );
    }
    let hard = std::fs::metadata(home.join("hard.bin")).unwrap();
    assert_eq!(
        hard.ino(),
        meta.ino(),
        "hard.bin is a hard link of moved.bin"
    );
    assert!(
        out.stdout.contains("moved.bin") && out.stdout.contains("soft.bin"),
        "ls -l lists the files:\n{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("%Capacity") && out.stdout.contains("Inodes"),
        "df and df -i report the filesystem:\n{}",
        out.stdout
    );

    g.run(&["destroy", c, "--yes"]).ok();
}
