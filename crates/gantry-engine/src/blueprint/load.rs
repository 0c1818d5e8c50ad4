//! Finding and reading a blueprint: a built-in by name, or a directory on disk. Everything is
//! read up front, so validation and rendering never touch the filesystem again.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Loaded, builtin};
use crate::EngineError;

/// Largest file a blueprint directory may hold (templates and scripts are small; big binaries
/// are artifacts).
const MAX_FILE: u64 = 8 << 20;

fn parse(origin: String, files: BTreeMap<String, Vec<u8>>) -> Result<Loaded, EngineError> {
    let file = format!("{origin}/blueprint.yaml");
    let text = files
        .get("blueprint.yaml")
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .ok_or_else(|| EngineError::BlueprintLoad {
            blueprint: origin.clone(),
            message: "no blueprint.yaml in it".into(),
            source: None,
        })?;
    let blueprint = gantry_core::blueprint::parse(&file, &text)
        .map_err(|e| EngineError::BlueprintInvalid(vec![e]))?;
    Ok(Loaded {
        blueprint,
        origin,
        file,
        files,
    })
}

/// The built-in blueprint `name`.
pub fn builtin(name: &str) -> Result<Loaded, EngineError> {
    let files = builtin::files(name).ok_or_else(|| EngineError::BlueprintLoad {
        blueprint: name.into(),
        source: None,
        message: format!(
            "no built-in blueprint of this name (built-ins: {})",
            builtin::names().join(", ")
        ),
    })?;
    parse(format!("builtin:{name}"), files)
}

/// The blueprint in directory `dir`.
pub fn dir(dir: &Path) -> Result<Loaded, EngineError> {
    let err = |message: String, source| EngineError::BlueprintLoad {
        blueprint: dir.display().to_string(),
        message,
        source,
    };
    if !dir.join("blueprint.yaml").is_file() {
        return Err(err(
            format!("{} has no blueprint.yaml", dir.display()),
            None,
        ));
    }
    let mut files = BTreeMap::new();
    read_tree(dir, dir, &mut files).map_err(|e| err(e.to_string(), Some(e)))?;
    parse(dir.display().to_string(), files)
}

fn read_tree(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        let name = e.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let meta = std::fs::metadata(&p)?;
        if meta.is_dir() {
            read_tree(root, &p, out)?;
        } else if meta.is_file() {
            if meta.len() > MAX_FILE {
                return Err(std::io::Error::other(format!(
                    "{} is larger than {} MiB; make it an artifact",
                    p.display(),
                    MAX_FILE >> 20
                )));
            }
            let rel = p
                .strip_prefix(root)
                .map_err(std::io::Error::other)?
                .to_string_lossy()
                .into_owned();
            out.insert(rel, std::fs::read(&p)?);
        }
    }
    Ok(())
}
