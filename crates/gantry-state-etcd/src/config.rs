//! Where the etcd store connects and how long it waits: parsed from an `etcd://` URL or built
//! by hand.
//!
//! Separate from the store so that a URL can be checked (and refused with a clear message)
//! before any network traffic, and so the CLI can show the endpoints it will use.

use std::fmt;
use std::time::Duration;

use gantry_state::{StateError, StateUrl};

/// The prefix used when a URL names none.
pub const DEFAULT_PREFIX: &str = gantry_state::DEFAULT_ETCD_PREFIX;

/// How an [`EtcdStore`](crate::EtcdStore) reaches its cluster. Its `Debug` never shows the
/// password.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// `http://host:port` each; etcd's client balances between them.
    pub endpoints: Vec<String>,
    /// Every key the store writes starts with it; always ends with `/`.
    pub prefix: String,
    /// How long opening a connection to one endpoint may take.
    pub connect_timeout: Duration,
    /// How long one request (a read, a transaction, a lease grant) may take, waiting for a
    /// connection included.
    pub request_timeout: Duration,
    /// `(user, password)` when etcd authentication is on.
    pub credentials: Option<(String, String)>,
}

impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field(
                "user",
                &self.credentials.as_ref().map(|(user, _)| user.as_str()),
            )
            .finish_non_exhaustive()
    }
}

impl EtcdConfig {
    /// `endpoints` as `host:port` or `http://host:port`, keys under `prefix` (a `/` is added at
    /// the end when missing), with the default timeouts (5 s to connect, 10 s per request).
    pub fn new(endpoints: &[impl AsRef<str>], prefix: &str) -> Result<EtcdConfig, StateError> {
        if endpoints.is_empty() {
            return Err(StateError::InvalidArgument {
                what: "etcd endpoints",
                reason: "there are none; give at least one host:port".into(),
            });
        }
        let endpoints = endpoints
            .iter()
            .map(|e| endpoint(e.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EtcdConfig {
            endpoints,
            prefix: normalize_prefix(prefix)?,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            credentials: None,
        })
    }

    /// Parses `etcd://h1:2379,h2:2379/prefix` (prefix [`DEFAULT_PREFIX`] when the path is
    /// empty) with gantry-state's one parser of store URLs, [`StateUrl`].
    pub fn from_url(url: &str) -> Result<EtcdConfig, StateError> {
        EtcdConfig::from_state_url(&StateUrl::parse(url)?)
    }

    /// The configuration an `etcd://USER:PASSWORD@…` or `etcd://…` [`StateUrl`] names.
    /// `etcds://` (TLS) is refused for now: it is not implemented yet.
    pub fn from_state_url(url: &StateUrl) -> Result<EtcdConfig, StateError> {
        let invalid = |reason: &str| StateError::InvalidArgument {
            what: "etcd state URL",
            reason: reason.to_owned(),
        };
        let StateUrl::Etcd {
            endpoints,
            prefix,
            user,
            password,
        } = url
        else {
            return Err(invalid(&format!(
                "a {} URL is not an etcd URL (etcd://HOST:PORT[,HOST:PORT…][/PREFIX])",
                url.kind()
            )));
        };
        if prefix.contains(['?', '#']) {
            return Err(invalid("it takes no query or fragment"));
        }
        let credentials = match (user, password) {
            (None, None) => None,
            (Some(user), Some(password)) if !user.is_empty() => {
                Some((user.clone(), password.clone()))
            }
            _ => {
                return Err(invalid(
                    "etcd authentication needs both a user and a password \
                     (etcd://USER:PASSWORD@HOST:PORT)",
                ));
            }
        };
        Ok(EtcdConfig {
            credentials,
            ..EtcdConfig::new(endpoints, prefix)?
        })
    }

    /// The endpoints as one comma-separated string, as errors show them.
    pub fn endpoints_display(&self) -> String {
        self.endpoints.join(",")
    }
}

fn endpoint(given: &str) -> Result<String, StateError> {
    let bad = |reason: &str| StateError::InvalidArgument {
        what: "etcd endpoint",
        reason: format!("{given:?}: {reason}"),
    };
    if given.contains('@') {
        return Err(StateError::InvalidArgument {
            what: "etcd endpoint",
            reason: "user names and passwords are not supported".into(),
        });
    }
    let hostport = if let Some(rest) = given.strip_prefix("http://") {
        rest
    } else if given.starts_with("https://") {
        return Err(bad(
            "TLS to etcd is not supported yet; use http:// on a trusted network",
        ));
    } else if given.contains("://") {
        return Err(bad("only http:// endpoints are supported"));
    } else {
        given
    };
    let hostport = hostport.trim_end_matches('/');
    let Some((host, port)) = hostport.rsplit_once(':') else {
        return Err(bad("it must be host:port"));
    };
    if host.is_empty() || host.contains('/') || port.parse::<u16>().is_err() {
        return Err(bad("it must be host:port"));
    }
    Ok(format!("http://{hostport}"))
}

fn normalize_prefix(prefix: &str) -> Result<String, StateError> {
    if prefix.is_empty() || prefix == "/" {
        return Err(StateError::InvalidArgument {
            what: "etcd key prefix",
            reason: "it must not be empty or the root: gantry's keys need a namespace of their \
                     own (the default is /gantry/)"
                .into(),
        });
    }
    let mut p = prefix.to_owned();
    if !p.ends_with('/') {
        p.push('/');
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_with_several_hosts_and_a_prefix() {
        let c = EtcdConfig::from_url("etcd://e1:2379,e2:2380/team/gantry").unwrap();
        assert_eq!(c.endpoints, ["http://e1:2379", "http://e2:2380"]);
        assert_eq!(c.prefix, "/team/gantry/");
    }

    #[test]
    fn url_without_a_path_uses_the_default_prefix() {
        for url in ["etcd://127.0.0.1:2379", "etcd://127.0.0.1:2379/"] {
            assert_eq!(EtcdConfig::from_url(url).unwrap().prefix, DEFAULT_PREFIX);
        }
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_a_password() {
        let e = EtcdConfig::from_url("etcd://root:s3cret@e1/x").unwrap_err();
        assert!(!format!("{e} {e:?}").contains("s3cret"), "{e:?}");
        for url in [
            "postgres://x/y",
            "etcd://",
            "etcd://e1/x",
            "etcd://e1:notaport/x",
            "etcd://e1:2379/x?a=b",
            "etcds://e1:2379/x",
            "etcd://root@e1:2379/x",
            "etcd://:pw@e1:2379/x",
        ] {
            assert!(
                matches!(
                    EtcdConfig::from_url(url),
                    Err(StateError::InvalidArgument { .. })
                ),
                "{url}"
            );
        }
    }

    #[test]
    fn credentials_come_from_the_url_and_never_show_in_debug() {
        let c = EtcdConfig::from_url("etcd://gantry:s3cret@e1:2379/p").unwrap();
        assert_eq!(c.credentials, Some(("gantry".into(), "s3cret".into())));
        let shown = format!("{c:?}");
        assert!(
            shown.contains("gantry") && !shown.contains("s3cret"),
            "{shown}"
        );
    }

    #[test]
    fn a_url_of_another_store_is_refused() {
        let url = StateUrl::parse("postgres://u:pw@db/gantry").unwrap();
        let e = EtcdConfig::from_state_url(&url).unwrap_err();
        assert!(e.to_string().contains("etcd"), "{e}");
        assert!(!format!("{e:?}").contains("pw@"), "{e:?}");
    }

    #[test]
    fn endpoints_are_normalized() {
        let c = EtcdConfig::new(&["127.0.0.1:1", "http://[::1]:2"], "p").unwrap();
        assert_eq!(c.endpoints, ["http://127.0.0.1:1", "http://[::1]:2"]);
        assert_eq!(c.prefix, "p/");
    }
}
