//! The built-in blueprints, embedded at build time from the workspace's `blueprints/`
//! directory (see `build.rs`), so the binary needs no files next to it.

use std::collections::BTreeMap;

mod generated {
    include!(concat!(env!("OUT_DIR"), "/builtin_blueprints.rs"));
}

/// Names of the built-in blueprints, sorted.
pub fn names() -> Vec<&'static str> {
    let mut names: Vec<&str> = generated::FILES
        .iter()
        .filter_map(|(p, _)| p.strip_suffix("/blueprint.yaml"))
        .filter(|n| !n.contains('/'))
        .collect();
    names.sort();
    names
}

/// The files of built-in `name`, by path relative to its directory; `None` if there is none.
pub fn files(name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
    let prefix = format!("{name}/");
    let files: BTreeMap<String, Vec<u8>> = generated::FILES
        .iter()
        .filter_map(|(p, b)| p.strip_prefix(&prefix).map(|r| (r.to_string(), b.to_vec())))
        .collect();
    files.contains_key("blueprint.yaml").then_some(files)
}
