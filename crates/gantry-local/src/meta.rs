//! `node.json`: what a local node is, written atomically.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use gantry_core::Tags;
use serde::{Deserialize, Serialize};

use crate::LocalError;

pub const META_FILE: &str = "node.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeMeta {
    pub name: String,
    /// Unique per node incarnation; every process the agent starts carries it in its environment.
    pub uid: String,
    pub project: String,
    pub cluster: String,
    pub pool: String,
    pub index: u32,
    pub address: Ipv4Addr,
    pub ssh_port: u16,
    pub user: String,
    pub tags: Tags,
    pub authorized_keys: Vec<String>,
    pub created_at: String,
    /// The agent's SSH host public key (OpenSSH line), recorded at create so gantry pins it
    /// before its first connection. None in nodes made by earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_public_key: Option<String>,
}

impl NodeMeta {
    pub fn read(dir: &Path) -> Result<NodeMeta, LocalError> {
        let path = dir.join(META_FILE);
        let text = std::fs::read(&path).map_err(LocalError::io("read", &path))?;
        serde_json::from_slice(&text).map_err(|source| LocalError::Meta { path, source })
    }

    /// Writes `node.json` via a temporary file and rename, so readers never see half a file.
    pub fn write(&self, dir: &Path) -> Result<(), LocalError> {
        let path = dir.join(META_FILE);
        let tmp = dir.join(".node.json.tmp");
        let json = serde_json::to_vec_pretty(self).expect("metadata serialises");
        std::fs::write(&tmp, json).map_err(LocalError::io("write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(LocalError::io("rename", &path))
    }
}

/// Paths inside a node directory.
#[derive(Debug, Clone)]
pub struct NodeDir(pub PathBuf);

impl NodeDir {
    pub fn home(&self) -> PathBuf {
        self.0.join("home")
    }
    pub fn bin(&self) -> PathBuf {
        self.0.join("bin")
    }
    pub fn host_key(&self) -> PathBuf {
        self.0.join("host_key")
    }
    pub fn lock(&self) -> PathBuf {
        self.0.join("agent.lock")
    }
    /// The pid of the lock holder, written right after it took the lock.
    pub fn pid(&self) -> PathBuf {
        self.0.join("agent.pid")
    }
    /// The agent's pid again, written once its listener is bound.
    pub fn ready(&self) -> PathBuf {
        self.0.join("agent.ready")
    }
    pub fn log(&self) -> PathBuf {
        self.0.join("agent.log")
    }
}
