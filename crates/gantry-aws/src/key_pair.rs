//! The cluster's key pair: the project's public key imported under a deterministic name, or an
//! existing one accepted only when it holds that key and is this world's (this world's key pair
//! holding an older key — the project key was rotated — is replaced); planned, and deleted
//! with the cluster. EC2 and moto give key fingerprints in different forms: both are computed.

use aws_sdk_ec2::types::{ResourceType, Tag};
use gantry_core::Tags;
use gantry_core::tags::{self, TagFilter};
use gantry_provider::{ChangeAction, ClusterRequest, ErrorKind, ResourceChange};
use sha2::Digest;

use crate::{AwsProvider, Clients, error, foreign, sdk, tag_filters, tag_spec, tags_of};

/// The deterministic name of a cluster's key pair (the project's public key, imported once per
/// cluster so that it carries the cluster's tags and goes with it).
pub fn key_pair_name(project: &str, cluster: &str) -> String {
    format!("gantry-{project}-{cluster}")
}

impl AwsProvider {
    /// The cluster's key pair: imported from the project key, or an existing one of that name
    /// used only if it holds the project key and is not another world's. A key pair someone else
    /// imported under gantry's name would let them, not us, log in to every node: refused.
    pub(crate) async fn ensure_key(
        &self,
        req: &ClusterRequest,
        t: &Tags,
    ) -> gantry_provider::Result<String> {
        let c = self.clients().await?;
        let name = key_pair_name(&req.project, &req.cluster);
        for attempt in 0..2 {
            let existing = match c
                .ec2
                .describe_key_pairs()
                .key_names(&name)
                .include_public_key(true)
                .send()
                .await
            {
                Ok(o) => o.key_pairs().first().cloned(),
                Err(e) if error::code(&e).is_some_and(|c| c.starts_with("InvalidKeyPair")) => None,
                Err(e) => return Err(sdk(self.region(), "DescribeKeyPairs", &name, e)),
            };
            if let Some(k) = existing {
                return self.check_key(c, &name, &k, req, t).await;
            }
            match c
                .ec2
                .import_key_pair()
                .key_name(&name)
                .public_key_material(aws_sdk_ec2::primitives::Blob::new(
                    req.ssh_public_key.trim().as_bytes().to_vec(),
                ))
                .tag_specifications(tag_spec(ResourceType::KeyPair, t))
                .send()
                .await
            {
                Ok(_) => return Ok(name),
                // Someone imported it meanwhile (or a lost answer was resent): look at it.
                Err(e) if error::code(&e) == Some("InvalidKeyPair.Duplicate") && attempt == 0 => {}
                Err(e) => return Err(sdk(self.region(), "ImportKeyPair", &name, e)),
            }
        }
        Err(self.e(
            "ImportKeyPair",
            &name,
            ErrorKind::Retryable,
            "the key pair kept appearing and vanishing",
        ))
    }

    /// Accepts an existing key pair only when it is this world's (or an older gantry's without
    /// a world tag) and holds the project's public key; tags an older one with the world.
    async fn check_key(
        &self,
        c: &Clients,
        name: &str,
        k: &aws_sdk_ec2::types::KeyPairInfo,
        req: &ClusterRequest,
        t: &Tags,
    ) -> gantry_provider::Result<String> {
        let kt = tags_of(k.tags());
        if let Some(w) = kt.get(tags::WORLD)
            && Some(w) != t.get(tags::WORLD)
        {
            return Err(foreign(
                self.region(),
                "DescribeKeyPairs",
                &format!("key pair {name}"),
                &kt,
            ));
        }
        let same = match (k.public_key(), k.key_fingerprint()) {
            (Some(pk), _) => same_public_key(pk, &req.ssh_public_key),
            (None, Some(fp)) => fingerprint_matches(fp, &req.ssh_public_key),
            (None, None) => false,
        };
        if !same && kt.contains_key(tags::WORLD) {
            // This world's own key pair with another key: the project key was rotated
            // (`gantry secrets rotate-ssh-key`). It is replaced, so that new nodes take the
            // current key; running nodes are rotated over SSH, not through the key pair.
            return self.replace_key(c, name, req, t).await;
        }
        if !same {
            return Err(self
                .e(
                    "DescribeKeyPairs",
                    name,
                    ErrorKind::Conflict,
                    format!(
                        "key pair {name} exists and does not hold this project's key (its \
                         fingerprint is {}); gantry will not launch nodes that key opens",
                        k.key_fingerprint().unwrap_or("unknown")
                    ),
                )
                .with_hint(format!(
                    "if it is a leftover of yours, delete it (`aws ec2 delete-key-pair \
                     --key-name {name}`); otherwise choose another cluster name or --project"
                )));
        }
        if !kt.contains_key(tags::WORLD)
            && let (Some(id), Some(w)) = (k.key_pair_id(), t.get(tags::WORLD))
        {
            c.ec2
                .create_tags()
                .resources(id)
                .tags(Tag::builder().key(tags::WORLD).value(w).build())
                .send()
                .await
                .map_err(|e| sdk(self.region(), "CreateTags", name, e))?;
        }
        Ok(name.to_string())
    }

    /// Deletes this world's key pair `name` and imports the project's current key under the
    /// same name and tags.
    async fn replace_key(
        &self,
        c: &Clients,
        name: &str,
        req: &ClusterRequest,
        t: &Tags,
    ) -> gantry_provider::Result<String> {
        match c.ec2.delete_key_pair().key_name(name).send().await {
            Ok(_) => {}
            Err(e) if error::code(&e).is_some_and(|c| c.starts_with("InvalidKeyPair")) => {}
            Err(e) => return Err(sdk(self.region(), "DeleteKeyPair", name, e)),
        }
        c.ec2
            .import_key_pair()
            .key_name(name)
            .public_key_material(aws_sdk_ec2::primitives::Blob::new(
                req.ssh_public_key.trim().as_bytes().to_vec(),
            ))
            .tag_specifications(tag_spec(ResourceType::KeyPair, t))
            .send()
            .await
            .map_err(|e| sdk(self.region(), "ImportKeyPair", name, e))?;
        tracing::info!(
            key_pair = name,
            "replaced the key pair with the rotated project key"
        );
        Ok(name.to_string())
    }

    /// What `ensure_cluster_resources` would change of the key pair: imported.
    pub(crate) async fn plan_key(
        &self,
        req: &ClusterRequest,
    ) -> gantry_provider::Result<Option<ResourceChange>> {
        let c = self.clients().await?;
        let r = self.region();
        let key = key_pair_name(&req.project, &req.cluster);
        let exists = match c.ec2.describe_key_pairs().key_names(&key).send().await {
            Ok(o) => !o.key_pairs().is_empty(),
            Err(e) if error::code(&e).is_some_and(|c| c.starts_with("InvalidKeyPair")) => false,
            Err(e) => return Err(sdk(r, "DescribeKeyPairs", &key, e)),
        };
        Ok((!exists).then(|| ResourceChange {
            action: ChangeAction::Create,
            resource: format!("key pair {key}"),
            detail: "the project's public key".into(),
        }))
    }

    /// Deletes the key pairs the filter matches; one already gone counts as deleted.
    pub(crate) async fn delete_key_pairs(&self, f: &TagFilter) -> gantry_provider::Result<()> {
        let c = self.clients().await?;
        let keys = c
            .ec2
            .describe_key_pairs()
            .set_filters(Some(tag_filters(f)))
            .send()
            .await
            .map_err(|e| sdk(self.region(), "DescribeKeyPairs", "key pairs", e))?;
        for k in keys.key_pairs() {
            if !f.matches(&tags_of(k.tags())) {
                continue;
            }
            let Some(name) = k.key_name() else { continue };
            match c.ec2.delete_key_pair().key_name(name).send().await {
                Ok(_) => {}
                Err(e) if error::code(&e).is_some_and(|c| c.starts_with("InvalidKeyPair")) => {}
                Err(e) => return Err(sdk(self.region(), "DeleteKeyPair", name, e)),
            }
        }
        Ok(())
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (only for key fingerprints: not worth a dependency).
fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.trim_end_matches('=').bytes() {
        let v = B64.iter().position(|&x| x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// `type base64` of an OpenSSH public key line (the comment and spacing do not matter).
fn key_blob(line: &str) -> Option<(&str, &str)> {
    let mut it = line.split_whitespace();
    Some((it.next()?, it.next()?))
}

fn same_public_key(a: &str, b: &str) -> bool {
    matches!((key_blob(a), key_blob(b)), (Some(x), Some(y)) if x == y)
}

/// Whether an EC2 key fingerprint is the project key's. EC2 gives ed25519 keys the base64
/// SHA-256 of the key (OpenSSH's form, with or without padding); moto gives the hex SHA-256 of
/// the key's DER SubjectPublicKeyInfo. Both are computed here.
fn fingerprint_matches(fp: &str, public_key: &str) -> bool {
    let Some((kind, b64)) = key_blob(public_key) else {
        return false;
    };
    let Some(blob) = base64_decode(b64) else {
        return false;
    };
    let fp = fp.trim().trim_start_matches("SHA256:");
    let sha = sha2::Sha256::digest(&blob);
    let b64 = base64_encode(&sha);
    if fp == b64 || fp == b64.trim_end_matches('=') {
        return true;
    }
    if kind == "ssh-ed25519" && blob.len() >= 32 {
        // SubjectPublicKeyInfo of an Ed25519 key: a fixed prefix, then the 32 key bytes.
        let mut der = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        der.extend_from_slice(&blob[blob.len() - 32..]);
        let hex: Vec<String> = sha2::Sha256::digest(&der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if fp.eq_ignore_ascii_case(&hex.join(":")) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOkXYFYEuSrbmK4hXZsN5BPExivHVo8DuIZA1HEhOHvr me@host";

    #[test]
    fn key_pairs_are_compared_by_key_not_comment() {
        assert!(same_public_key(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOkXYFYEuSrbmK4hXZsN5BPExivHVo8DuIZA1HEhOHvr",
            KEY
        ));
        assert!(!same_public_key(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG1jYXRzZW5sZW5zZW5zZW5zZW5zZW5zZW5zZW5zZW5z x",
            KEY
        ));
        assert!(!same_public_key("", KEY));
        // moto's form (hex SHA-256 of the DER key) and EC2's (base64 SHA-256 of the key).
        assert!(fingerprint_matches(
            "75:86:78:51:d6:96:35:40:04:34:fe:d8:5a:6b:ce:05:bb:32:c2:0f:ad:ff:06:c0:6d:fa:7c:72:88:f3:96:30",
            KEY
        ));
        let blob = base64_decode(key_blob(KEY).unwrap().1).unwrap();
        let ec2 = base64_encode(&sha2::Sha256::digest(&blob));
        assert!(fingerprint_matches(&ec2, KEY));
        assert!(fingerprint_matches(ec2.trim_end_matches('='), KEY));
        assert!(!fingerprint_matches("00:11", KEY));
        assert_eq!(
            base64_encode(b"any carnal pleas"),
            "YW55IGNhcm5hbCBwbGVhcw=="
        );
        assert_eq!(
            base64_decode("YW55IGNhcm5hbCBwbGVhcw==").unwrap(),
            b"any carnal pleas"
        );
    }
}
