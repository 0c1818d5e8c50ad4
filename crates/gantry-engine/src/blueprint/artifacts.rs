//! Artifacts: the binaries and archives blueprints use.
//!
//! - `url` + `sha256`: downloaded once into the cache (`<cache>/<sha256>`), verified while
//!   writing, renamed into place only when the sum matches; a mismatch names both sums.
//! - `command`: found on the node's PATH; when missing and a `package` is given, installed
//!   with apt-get only when allowed, otherwise the error names the package.
//! - `path`: a file that must exist on the node.
//!
//! Nodes that do not share gantry's filesystem get downloaded artifacts uploaded to
//! `~/.gantry/artifacts/<sha256>`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gantry_core::blueprint::{ArtifactSource, Blueprint};
use sha2::Digest;

use super::remote::{Remote, shq};
use super::render::ArtifactPaths;
use crate::EngineError;

fn err(bp: &str, artifact: &str, message: impl Into<String>) -> EngineError {
    EngineError::Artifact {
        blueprint: bp.into(),
        artifact: artifact.into(),
        message: message.into(),
        source: None,
    }
}

/// [`err`] that keeps the error it came from.
fn err_from(
    bp: &str,
    artifact: &str,
    message: impl Into<String>,
    source: impl std::error::Error + Send + Sync + 'static,
) -> EngineError {
    EngineError::Artifact {
        blueprint: bp.into(),
        artifact: artifact.into(),
        message: message.into(),
        source: Some(Box::new(source)),
    }
}

fn agent() -> ureq::Agent {
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_connect(Some(Duration::from_secs(20)))
        .timeout_recv_body(Some(Duration::from_secs(1800)))
        .http_status_as_error(false)
        .build()
        .new_agent()
}

/// The cached file of `sha256`, downloading it from `url` if it is not cached yet.
/// Returns the path and whether it was downloaded now.
pub fn fetch(
    cache: &Path,
    bp: &str,
    name: &str,
    url: &str,
    sha256: &str,
) -> Result<(PathBuf, bool), EngineError> {
    let dest = cache.join(sha256);
    if dest.is_file() {
        return Ok((dest, false));
    }
    std::fs::create_dir_all(cache).map_err(|e| {
        err_from(
            bp,
            name,
            format!("cannot create {}: {e}", cache.display()),
            e,
        )
    })?;
    let resp = agent()
        .get(url)
        .call()
        .map_err(|e| err_from(bp, name, format!("downloading {url}: {e}"), e))?;
    if !resp.status().is_success() {
        return Err(err(
            bp,
            name,
            format!("downloading {url}: HTTP status {}", resp.status()),
        ));
    }
    let tmp = cache.join(format!(".{sha256}.tmp-{}", std::process::id()));
    let result = (|| -> Result<String, String> {
        let mut f = std::fs::File::create(&tmp).map_err(|e| e.to_string())?;
        let mut body = resp.into_body();
        let mut reader = body.with_config().limit(u64::MAX).reader();
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = reader.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            f.write_all(&buf[..n]).map_err(|e| e.to_string())?;
        }
        f.sync_all().map_err(|e| e.to_string())?;
        Ok(hex::encode(hasher.finalize()))
    })();
    let got = match result {
        Ok(g) => g,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(err(bp, name, format!("downloading {url}: {e}")));
        }
    };
    if got != sha256 {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(
            bp,
            name,
            format!("checksum mismatch for {url}: expected sha256 {sha256}, got {got}"),
        ));
    }
    std::fs::rename(&tmp, &dest)
        .map_err(|e| err(bp, name, format!("cannot store {}: {e}", dest.display())))?;
    Ok((dest, true))
}

/// Paths of the blueprint's artifacts on one node. `downloads` holds the local cache path of
/// each URL artifact; `shares_fs` says whether the node sees gantry's filesystem.
pub async fn resolve_on_node(
    remote: &Remote,
    bp: &Blueprint,
    downloads: &ArtifactPaths,
    shares_fs: bool,
    allow_packages: bool,
) -> Result<ArtifactPaths, EngineError> {
    let mut out = ArtifactPaths::new();
    let node = &remote.target.name;
    for a in &bp.artifacts {
        let e = |m: String| err(&bp.name, &a.name, m);
        let path = match &a.source {
            ArtifactSource::Url { sha256, .. } => {
                let local = downloads.get(&a.name).cloned().unwrap_or_default();
                if shares_fs {
                    local
                } else {
                    let (st, out) = remote
                        .sh(
                            "mkdir -p .gantry/artifacts && cd .gantry/artifacts && pwd",
                            None,
                        )
                        .await
                        .map_err(|x| e(x.to_string()))?;
                    if !st.success() {
                        return Err(e(format!(
                            "cannot create ~/.gantry/artifacts on {node}: {out}"
                        )));
                    }
                    let dir = out.trim().to_string();
                    let dest = format!("{dir}/{sha256}");
                    let (st, _) = remote
                        .sh(&format!("test -f {}", shq(&dest)), None)
                        .await
                        .map_err(|x| e(x.to_string()))?;
                    if !st.success() {
                        let tmp = format!("{dest}.tmp");
                        remote
                            .upload(Path::new(&local), &tmp)
                            .await
                            .map_err(|x| e(format!("uploading to {node}: {x}")))?;
                        remote
                            .sh(&format!("mv -f {} {}", shq(&tmp), shq(&dest)), None)
                            .await
                            .map_err(|x| e(x.to_string()))?;
                    }
                    dest
                }
            }
            ArtifactSource::Path { path } => {
                let (st, _) = remote
                    .sh(&format!("test -e {}", shq(path)), None)
                    .await
                    .map_err(|x| e(x.to_string()))?;
                if !st.success() {
                    return Err(e(format!("{path} does not exist on {node}")));
                }
                path.clone()
            }
            ArtifactSource::Command { command, package } => {
                let which = format!("command -v {}", shq(command));
                let (st, out) = remote
                    .sh(&which, None)
                    .await
                    .map_err(|x| e(x.to_string()))?;
                if st.success() {
                    out.trim().to_string()
                } else {
                    let Some(pkg) = package else {
                        return Err(e(format!(
                            "command `{command}` is not on the PATH of {node}"
                        )));
                    };
                    if !allow_packages {
                        return Err(e(format!(
                            "command `{command}` is not on the PATH of {node}; install the \
                             package `{pkg}` there, or let gantry do it with `gantry up \
                             --allow-packages` (or GANTRY_ALLOW_PACKAGES=1)"
                        )));
                    }
                    let install = format!(
                        "if [ \"$(id -u)\" = 0 ]; then S=; else S='sudo -n'; fi; \
                         export DEBIAN_FRONTEND=noninteractive; \
                         $S apt-get -o DPkg::Lock::Timeout=600 install -y -q {p} \
                         || {{ $S apt-get -o DPkg::Lock::Timeout=600 update -q && \
                         $S apt-get -o DPkg::Lock::Timeout=600 install -y -q {p}; }}",
                        p = shq(pkg)
                    );
                    let (st, out) = remote
                        .sh(&install, None)
                        .await
                        .map_err(|x| e(x.to_string()))?;
                    if !st.success() {
                        return Err(e(format!(
                            "installing package `{pkg}` on {node} failed ({st}):\n{}",
                            super::remote::tail(&out, 20)
                        )));
                    }
                    let (st, out) = remote
                        .sh(&which, None)
                        .await
                        .map_err(|x| e(x.to_string()))?;
                    if !st.success() {
                        return Err(e(format!(
                            "package `{pkg}` is installed on {node} but `{command}` is still \
                             not on the PATH"
                        )));
                    }
                    out.trim().to_string()
                }
            }
        };
        out.insert(a.name.clone(), path);
    }
    Ok(out)
}
