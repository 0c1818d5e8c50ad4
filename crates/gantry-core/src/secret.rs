//! Secret values and masking them out of everything gantry stores or prints.
//!
//! Blueprints declare `secret` params whose values gantry generates per cluster (passwords of
//! the services it deploys). Those values must never reach the state store, an event, a run
//! record, an error, a progress line or a log: this module exists so that every such output
//! can be passed through one [`Masker`] that knows the cluster's secrets and replaces each
//! occurrence with [`MASK`], and so that a secret held in memory cannot be printed by accident
//! ([`Secret`]'s `Debug` shows the mask).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// What a secret value is shown as.
pub const MASK: &str = "********";

/// A secret string. `Debug` never shows it; read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place that needs it (a template context, a file).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({MASK})")
    }
}

/// Replaces every known secret value in a text with [`MASK`].
#[derive(Clone, Default)]
pub struct Masker {
    /// Longest first, so a secret that contains another is masked whole.
    values: Vec<String>,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Masker({} secret(s))", self.values.len())
    }
}

impl Masker {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> Masker {
        let mut m = Masker::default();
        for s in secrets {
            m.add(s);
        }
        m
    }

    pub fn add(&mut self, secret: &Secret) {
        let v = secret.expose();
        // An empty value would "match" everywhere; gantry never generates one.
        if v.is_empty() || self.values.iter().any(|x| x == v) {
            return;
        }
        self.values.push(v.to_string());
        self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Whether `text` contains any of the secrets.
    pub fn finds(&self, text: &str) -> bool {
        self.values.iter().any(|v| text.contains(v.as_str()))
    }

    /// `text` with every secret replaced by [`MASK`].
    pub fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if !self.finds(text) {
            return Cow::Borrowed(text);
        }
        let mut out = text.to_string();
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), MASK);
            }
        }
        Cow::Owned(out)
    }

    /// [`Masker::mask`] into an owned string.
    pub fn masked(&self, text: &str) -> String {
        self.mask(text).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_every_occurrence_and_never_prints_a_secret() {
        let a = Secret::new("s3cretA");
        let ab = Secret::new("s3cretAB");
        let m = Masker::new([&a, &ab, &Secret::new("")]);
        assert_eq!(
            m.mask("x s3cretAB y s3cretA z"),
            format!("x {MASK} y {MASK} z")
        );
        assert!(matches!(m.mask("nothing here"), Cow::Borrowed(_)));
        assert!(m.finds("..s3cretA.."));
        assert!(!m.finds("s3cret"));
        assert_eq!(format!("{a:?}"), format!("Secret({MASK})"));
        assert!(!format!("{m:?}").contains("s3cret"));
        assert!(Masker::default().is_empty());
    }
}
