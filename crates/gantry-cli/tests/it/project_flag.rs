//! `--project` (and `GANTRY_PROJECT`) names a directory under `GANTRY_HOME`: anything but a
//! valid name is refused before gantry touches the disk.

use crate::support::*;

#[test]
fn a_project_that_is_a_path_is_refused_before_anything_is_written() {
    let g = Gantry::new();
    let outside = g.work().join("elsewhere");
    let abs = outside.display().to_string();
    for bad in [abs.as_str(), "../../escape", "Team"] {
        let out = g.run(&["--project", bad, "ls"]).expect(2);
        assert!(
            out.stderr.contains("--project") && out.stderr.contains("named like a cluster"),
            "{bad}: {}",
            out.stderr
        );
        let mut cmd = g.command(&["ls"]);
        cmd.env("GANTRY_PROJECT", bad);
        g.spawn_cmd(cmd, format!("GANTRY_PROJECT={bad} gantry ls"))
            .wait(CMD_TIMEOUT)
            .expect(2);
    }
    // An absolute project used to become the key's directory.
    assert!(!outside.exists(), "{} was created", outside.display());
    assert!(
        !g.home().join("projects").exists(),
        "a project directory was created"
    );
    assert!(!g.work().join("escape").exists());
}
