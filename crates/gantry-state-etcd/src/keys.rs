//! Where each record lives in etcd's flat key space (the layout is written out in the crate
//! docs).
//!
//! Kept apart from the store so that the layout is in one place: every key the store reads or
//! writes is built here. Names (projects, clusters, run ids, lock keys…) are free text to the
//! store, so each one is escaped into a single path segment that never contains `/`: a prefix
//! scan of `clusters/<project>/` can then never reach into another project whose name merely
//! starts with the same characters.

use time::OffsetDateTime;

/// One name as a key segment: ASCII letters, digits and `. _ - @ : +` stay as they are; every
/// other byte (the `/` separator and `%` itself included) becomes `%XX`.
///
/// The encoding is per character, so the escape of a prefix of a name is a prefix of the
/// escape of that name: `find_run` scans by an escaped id prefix.
pub(crate) fn seg(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b".-_@:+".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inverse of [`seg`]: `None` for text [`seg`] cannot have written.
pub(crate) fn unseg(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A time as a fixed-width decimal that sorts like the time itself (nanoseconds since the
/// epoch, shifted to be non-negative), for index keys read newest first.
pub(crate) fn sortable_time(at: OffsetDateTime) -> String {
    let shifted = at.unix_timestamp_nanos() + (1i128 << 63);
    let clamped = shifted.clamp(0, i128::from(u64::MAX));
    format!("{clamped:020}")
}

/// The end of the range of every key starting with `prefix` (etcd's `range_end`): the prefix
/// with its last byte incremented. Our prefixes always end in `/`, which increments to `0`.
pub(crate) fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// The keys of one store, all under its prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    /// Ends with `/`.
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: String) -> Keys {
        Keys { prefix }
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    fn k(&self, rest: std::fmt::Arguments<'_>) -> String {
        format!("{}{rest}", self.prefix)
    }

    pub(crate) fn schema(&self) -> String {
        self.k(format_args!("schema"))
    }

    pub(crate) fn world(&self) -> String {
        self.k(format_args!("world"))
    }

    pub(crate) fn cluster(&self, project: &str, name: &str) -> String {
        self.k(format_args!("clusters/{}/{}", seg(project), seg(name)))
    }

    pub(crate) fn clusters(&self, project: &str) -> String {
        self.k(format_args!("clusters/{}/", seg(project)))
    }

    pub(crate) fn node(&self, project: &str, cluster: &str, name: &str) -> String {
        self.k(format_args!(
            "nodes/{}/{}/{}",
            seg(project),
            seg(cluster),
            seg(name)
        ))
    }

    pub(crate) fn nodes(&self, project: &str, cluster: &str) -> String {
        self.k(format_args!("nodes/{}/{}/", seg(project), seg(cluster)))
    }

    pub(crate) fn run(&self, id: &str) -> String {
        self.k(format_args!("runs/{}", seg(id)))
    }

    /// Not a directory: every run id that starts with `id_prefix`.
    pub(crate) fn runs_with_prefix(&self, id_prefix: &str) -> String {
        self.k(format_args!("runs/{}", seg(id_prefix)))
    }

    pub(crate) fn run_by_project(
        &self,
        project: &str,
        started: OffsetDateTime,
        id: &str,
    ) -> String {
        self.k(format_args!(
            "runs-by-project/{}/{}/{}",
            seg(project),
            sortable_time(started),
            seg(id)
        ))
    }

    pub(crate) fn runs_by_project(&self, project: &str) -> String {
        self.k(format_args!("runs-by-project/{}/", seg(project)))
    }

    pub(crate) fn run_by_cluster(
        &self,
        project: &str,
        cluster: &str,
        started: OffsetDateTime,
        id: &str,
    ) -> String {
        self.k(format_args!(
            "runs-by-cluster/{}/{}/{}/{}",
            seg(project),
            seg(cluster),
            sortable_time(started),
            seg(id)
        ))
    }

    pub(crate) fn runs_by_cluster(&self, project: &str, cluster: &str) -> String {
        self.k(format_args!(
            "runs-by-cluster/{}/{}/",
            seg(project),
            seg(cluster)
        ))
    }

    pub(crate) fn step(&self, run_id: &str, step_id: &str) -> String {
        self.k(format_args!("steps/{}/{}", seg(run_id), seg(step_id)))
    }

    pub(crate) fn steps(&self, run_id: &str) -> String {
        self.k(format_args!("steps/{}/", seg(run_id)))
    }

    pub(crate) fn event_seq(&self, run_id: &str) -> String {
        self.k(format_args!("event-seq/{}", seg(run_id)))
    }

    pub(crate) fn event(&self, run_id: &str, seq: u64) -> String {
        self.k(format_args!("events/{}/{seq:020}", seg(run_id)))
    }

    pub(crate) fn events(&self, run_id: &str) -> String {
        self.k(format_args!("events/{}/", seg(run_id)))
    }

    pub(crate) fn lock(&self, key: &str) -> String {
        self.k(format_args!("locks/{}", seg(key)))
    }

    pub(crate) fn lock_token(&self, key: &str) -> String {
        self.k(format_args!("lock-tokens/{}", seg(key)))
    }

    pub(crate) fn inventory(&self, project: &str, scope: &str) -> String {
        self.k(format_args!("inventory/{}/{}", seg(project), seg(scope)))
    }

    pub(crate) fn inventories(&self, project: &str) -> String {
        self.k(format_args!("inventory/{}/", seg(project)))
    }

    pub(crate) fn inventory_invalidated(&self, project: &str) -> String {
        self.k(format_args!("inventory-invalidated/{}", seg(project)))
    }

    /// A secret's envelope. The whole name is one segment (its `/` escaped), so a name prefix
    /// is a key prefix: [`Keys::secrets_with_prefix`].
    pub(crate) fn secret(&self, name: &str) -> String {
        self.k(format_args!("secrets/{}", seg(name)))
    }

    pub(crate) fn secrets_with_prefix(&self, name_prefix: &str) -> String {
        self.secret(name_prefix)
    }

    /// The secret name of a key under `secrets/`.
    pub(crate) fn secret_name(&self, key: &[u8]) -> Option<String> {
        let key = std::str::from_utf8(key).ok()?;
        unseg(key.strip_prefix(&self.prefix)?.strip_prefix("secrets/")?)
    }
}

impl Keys {
    /// Every key of one record kind (`clusters`, `runs-by-project`, `inventory`, `locks`…),
    /// for the enumerations of `gantry state migrate`.
    pub(crate) fn area(&self, area: &str) -> String {
        self.k(format_args!("{area}/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unseg_inverts_seg() {
        for name in ["ssh/p/private-key", "a%b_c", "é/ü", ""] {
            assert_eq!(unseg(&seg(name)).as_deref(), Some(name));
        }
        assert_eq!(unseg("%4"), None);
        assert_eq!(unseg("%zz"), None);
    }

    #[test]
    fn segments_never_contain_the_separator() {
        assert_eq!(seg("a/b"), "a%2Fb");
        assert_eq!(seg("50%"), "50%25");
        assert_eq!(seg("aws:us-east-1"), "aws:us-east-1");
        assert_eq!(seg("é"), "%C3%A9");
        assert!(seg("run-abc/def").starts_with(&seg("run-abc/")));
    }

    #[test]
    fn unseg_undoes_seg() {
        for name in ["a/b", "50%", "aws:us-east-1", "é", "plain", ""] {
            assert_eq!(unseg(&seg(name)).as_deref(), Some(name));
        }
        assert_eq!(unseg("%2"), None);
        assert_eq!(unseg("%zz"), None);
    }

    #[test]
    fn sortable_time_sorts_like_time() {
        let t = |s: i64| OffsetDateTime::from_unix_timestamp(s).unwrap();
        let (a, b, c) = (
            sortable_time(t(-5)),
            sortable_time(t(0)),
            sortable_time(t(1)),
        );
        assert!(a < b && b < c, "{a} {b} {c}");
        assert_eq!(a.len(), b.len());
    }

    #[test]
    fn range_end_covers_the_prefix_only() {
        assert_eq!(range_end("/g/events/r1/"), b"/g/events/r10".to_vec());
    }
}
