//! Where the state lives, as users write it: `GANTRY_STATE` or `--state`.
//!
//! One parser for the CLI and the server, so that every place that opens a store agrees on the
//! schemes and every place that shows a store's address shows it the same way: with its
//! password replaced. A store URL is typed and pasted by people and ends up in logs, events,
//! `gantry state status` and error messages; the password in it must reach none of them.
//! [`StateUrl`]'s `Display` and `Debug` are the redacted form; only [`StateUrl::connect_string`]
//! gives the original, for the driver.
//!
//! Schemes:
//! - `sqlite://PATH` (`sqlite:///abs/path` or a path relative to the working directory): the
//!   embedded default, `sqlite://$GANTRY_HOME/state.db`;
//! - `postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=…]` (also `postgresql://`);
//! - `etcd://[USER[:PASSWORD]@]HOST:PORT[,HOST:PORT…][/PREFIX]` (plain HTTP) or `etcds://…`
//!   (TLS); the prefix defaults to `/gantry/`.

use std::fmt;
use std::path::PathBuf;

use crate::error::StateError;

/// What the password of a URL is shown as.
pub const REDACTED: &str = "***";

/// The default key prefix of an etcd store.
pub const DEFAULT_ETCD_PREFIX: &str = "/gantry/";

/// A parsed state store address.
#[derive(Clone, PartialEq, Eq)]
pub enum StateUrl {
    Sqlite {
        path: PathBuf,
    },
    Postgres {
        /// The URL as given (with its password), for the driver only.
        url: String,
    },
    Etcd {
        /// `http://HOST:PORT` (or `https://` for `etcds://`), in the order given.
        endpoints: Vec<String>,
        /// Key prefix, always starting and ending with `/`.
        prefix: String,
        user: Option<String>,
        password: Option<String>,
    },
}

impl StateUrl {
    /// Parses a state URL; an unknown or missing scheme is an error naming the ones known.
    pub fn parse(s: &str) -> Result<StateUrl, StateError> {
        let invalid = |reason: String| StateError::InvalidArgument {
            what: "state store URL",
            reason,
        };
        let s = s.trim();
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(invalid(format!(
                "{:?} has no scheme; use sqlite://PATH, postgres://USER@HOST/DB or \
                 etcd://HOST:PORT",
                redact_userinfo(s)
            )));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => {
                if rest.is_empty() {
                    return Err(invalid(
                        "sqlite:// needs a file path, e.g. sqlite:///var/lib/gantry/state.db"
                            .into(),
                    ));
                }
                Ok(StateUrl::Sqlite {
                    path: PathBuf::from(rest),
                })
            }
            "postgres" | "postgresql" => {
                let host = authority(rest)
                    .rsplit_once('@')
                    .map_or(authority(rest), |(_, h)| h);
                if host.is_empty() {
                    return Err(invalid(format!(
                        "{} names no host; use postgres://USER@HOST[:PORT]/DB",
                        redact_userinfo(s)
                    )));
                }
                Ok(StateUrl::Postgres { url: s.to_string() })
            }
            "etcd" | "etcds" => {
                let web = if scheme.eq_ignore_ascii_case("etcds") {
                    "https"
                } else {
                    "http"
                };
                let auth = authority(rest);
                let path = &rest[auth.len()..];
                let (userinfo, hosts) = match auth.rsplit_once('@') {
                    Some((u, h)) => (Some(u), h),
                    None => (None, auth),
                };
                let (user, password) = match userinfo {
                    Some(u) => match u.split_once(':') {
                        Some((user, pass)) => (Some(user.to_string()), Some(pass.to_string())),
                        None => (Some(u.to_string()), None),
                    },
                    None => (None, None),
                };
                let mut endpoints = Vec::new();
                for h in hosts.split(',') {
                    let h = h.trim();
                    let port_ok = h.rsplit_once(':').is_some_and(|(host, port)| {
                        !host.is_empty() && port.parse::<u16>().is_ok()
                    });
                    if !port_ok {
                        return Err(invalid(format!(
                            "etcd endpoint {h:?} is not HOST:PORT (e.g. etcd://10.0.0.1:2379,10.0.0.2:2379)"
                        )));
                    }
                    endpoints.push(format!("{web}://{h}"));
                }
                let prefix = match path.trim_matches('/') {
                    "" => DEFAULT_ETCD_PREFIX.to_string(),
                    p => format!("/{p}/"),
                };
                Ok(StateUrl::Etcd {
                    endpoints,
                    prefix,
                    user,
                    password,
                })
            }
            other => Err(invalid(format!(
                "unknown scheme {other:?}; gantry keeps state in sqlite://PATH, \
                 postgres://USER@HOST/DB or etcd://HOST:PORT"
            ))),
        }
    }

    /// The default store of a gantry home: `sqlite://DIR/state.db`.
    pub fn sqlite(path: impl Into<PathBuf>) -> StateUrl {
        StateUrl::Sqlite { path: path.into() }
    }

    /// `sqlite`, `postgres` or `etcd`, as [`crate::StateStore::kind`] names stores.
    pub fn kind(&self) -> &'static str {
        match self {
            StateUrl::Sqlite { .. } => "sqlite",
            StateUrl::Postgres { .. } => "postgres",
            StateUrl::Etcd { .. } => "etcd",
        }
    }

    /// Whether several machines may share this store (a team store, as opposed to the
    /// embedded SQLite file of one home).
    pub fn is_shared(&self) -> bool {
        !matches!(self, StateUrl::Sqlite { .. })
    }

    /// The URL with its password, for the driver that connects. Never log or show it.
    pub fn connect_string(&self) -> String {
        match self {
            StateUrl::Sqlite { path } => format!("sqlite://{}", path.display()),
            StateUrl::Postgres { url } => url.clone(),
            StateUrl::Etcd { .. } => self.to_string(),
        }
    }
}

/// The part of `rest` (after `scheme://`) before the path or query.
fn authority(rest: &str) -> &str {
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    &rest[..end]
}

/// `s` with the password of its `user:password@` part (if any) replaced by [`REDACTED`], and
/// `password=` query parameters too.
fn redact_userinfo(s: &str) -> String {
    let (scheme, rest) = match s.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, s),
    };
    let auth = authority(rest);
    let tail = &rest[auth.len()..];
    let auth = match auth.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:{REDACTED}@{host}"),
            None => auth.to_string(),
        },
        None => auth.to_string(),
    };
    let tail = redact_query(tail);
    match scheme {
        Some(scheme) => format!("{scheme}://{auth}{tail}"),
        None => format!("{auth}{tail}"),
    }
}

/// `password=…` in a query string replaced by [`REDACTED`].
fn redact_query(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_string();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}={REDACTED}"),
            _ => kv.to_string(),
        })
        .collect();
    format!("{path}?{}", query.join("&"))
}

impl fmt::Display for StateUrl {
    /// The URL without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateUrl::Sqlite { path } => write!(f, "sqlite://{}", path.display()),
            StateUrl::Postgres { url } => f.write_str(&redact_userinfo(url)),
            StateUrl::Etcd {
                endpoints,
                prefix,
                user,
                password,
            } => {
                let tls = endpoints.first().is_some_and(|e| e.starts_with("https://"));
                let hosts: Vec<&str> = endpoints
                    .iter()
                    .map(|e| e.split_once("://").map_or(e.as_str(), |(_, h)| h))
                    .collect();
                let userinfo = match (user, password) {
                    (Some(u), Some(_)) => format!("{u}:{REDACTED}@"),
                    (Some(u), None) => format!("{u}@"),
                    _ => String::new(),
                };
                write!(
                    f,
                    "{}://{userinfo}{}{}",
                    if tls { "etcds" } else { "etcd" },
                    hosts.join(","),
                    prefix.trim_end_matches('/')
                )
            }
        }
    }
}

impl fmt::Debug for StateUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StateUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_scheme_parses_and_shows_without_its_password() {
        let pg =
            StateUrl::parse("postgres://gantry:s3cr3t-pw@db.internal:5433/gantry?sslmode=require")
                .unwrap();
        assert_eq!(pg.kind(), "postgres");
        assert!(pg.is_shared());
        assert_eq!(
            pg.to_string(),
            "postgres://gantry:***@db.internal:5433/gantry?sslmode=require"
        );
        assert!(!format!("{pg:?}").contains("s3cr3t"));
        assert!(
            pg.connect_string().contains("s3cr3t-pw"),
            "the driver gets it"
        );
        let q =
            StateUrl::parse("postgresql://gantry@db/g?password=s3cr3t&sslmode=disable").unwrap();
        assert_eq!(
            q.to_string(),
            "postgresql://gantry@db/g?password=***&sslmode=disable"
        );

        let etcd = StateUrl::parse("etcd://root:pw1@e1:2379,e2:2379,e3:2379/team/").unwrap();
        match &etcd {
            StateUrl::Etcd {
                endpoints,
                prefix,
                user,
                password,
            } => {
                assert_eq!(
                    endpoints,
                    &["http://e1:2379", "http://e2:2379", "http://e3:2379"]
                );
                assert_eq!(prefix, "/team/");
                assert_eq!(user.as_deref(), Some("root"));
                assert_eq!(password.as_deref(), Some("pw1"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            etcd.to_string(),
            "etcd://root:***@e1:2379,e2:2379,e3:2379/team"
        );
        let tls = StateUrl::parse("etcds://127.0.0.1:2379").unwrap();
        assert!(matches!(&tls, StateUrl::Etcd { endpoints, prefix, .. }
            if endpoints == &["https://127.0.0.1:2379"] && prefix == DEFAULT_ETCD_PREFIX));

        let sq = StateUrl::parse("sqlite:///var/lib/gantry/state.db").unwrap();
        assert_eq!(
            sq,
            StateUrl::Sqlite {
                path: "/var/lib/gantry/state.db".into()
            }
        );
        assert!(!sq.is_shared());
        assert_eq!(sq.to_string(), "sqlite:///var/lib/gantry/state.db");
    }

    #[test]
    fn bad_urls_say_what_to_write_and_never_echo_a_password() {
        for (url, needle) in [
            ("mysql://u:hunter2@h/db", "unknown scheme \"mysql\""),
            ("db.internal:5432", "has no scheme"),
            ("u:hunter2@db.internal", "has no scheme"),
            ("postgres://u:hunter2@/db", "names no host"),
            ("etcd://u:hunter2@e1", "is not HOST:PORT"),
            ("etcd://e1:2379,e2:notaport", "is not HOST:PORT"),
            ("sqlite://", "needs a file path"),
        ] {
            let err = StateUrl::parse(url).unwrap_err().to_string();
            let full = format!("{err}: {:?}", StateUrl::parse(url).unwrap_err());
            assert!(full.contains(needle), "{url}: {full}");
            assert!(!full.contains("hunter2"), "{url}: {full}");
        }
    }
}
