//! Reading a `postgres://` URL into a driver configuration, and showing it without its password.
//!
//! tokio-postgres understands `sslmode` only as `disable`, `prefer` or `require`, and rejects
//! parameters it does not know; gantry also accepts libpq's `verify-ca` and `verify-full` and
//! `sslrootcert=PATH`, so those are taken out of the URL here and handled by [`crate::tls`].
//!
//! A URL may carry a password (`postgres://user:secret@host/db`): it is read through
//! [`StateUrl`], gantry's one parser of store URLs, and only [`StateUrl`]'s redacted `Display` is
//! ever put into a message or a `Debug` output.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use gantry_state::{StateError, StateUrl};
use tokio_postgres::config::{Host, SslMode};

/// How long the server lets a session sit in an open transaction without a statement before
/// ending it (`idle_in_transaction_session_timeout`, unless the URL's `options` set it): shorter
/// than the store's call timeout, so a run taking a cluster lock over from a stalled process
/// waits at most this long for the stalled process's row locks.
pub(crate) const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(5);

/// How long a connection attempt may take when the URL does not say (`connect_timeout=`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What `sslmode` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsMode {
    /// Plain TCP: no `sslmode`, or `disable`, `allow` or `prefer` (gantry does not negotiate TLS
    /// opportunistically; ask for it with `require`).
    Plain,
    /// Encrypted, the server's certificate not checked (libpq's `require`).
    Require,
    /// Encrypted, the certificate chain checked against the trusted roots, not the host name.
    VerifyCa,
    /// Encrypted, chain and host name checked.
    VerifyFull,
}

/// A parsed connection URL.
pub(crate) struct Target {
    pub config: tokio_postgres::Config,
    pub tls: TlsMode,
    /// `sslrootcert=PATH`: the roots to trust instead of the system's.
    pub root_cert: Option<PathBuf>,
    /// The URL with its password replaced.
    pub redacted: String,
    /// `host:port` of every host, for messages.
    pub endpoint: String,
}

pub(crate) fn parse(url: &str) -> Result<Target, StateError> {
    let state_url = StateUrl::parse(url)?;
    let redacted = state_url.to_string();
    let invalid = |reason: String| StateError::InvalidArgument {
        what: "postgres state URL",
        reason: format!("{redacted}: {reason}"),
    };
    let StateUrl::Postgres { url } = &state_url else {
        return Err(invalid(
            "it must start with postgres:// or postgresql://".into(),
        ));
    };
    let url = url.as_str();
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut tls = TlsMode::Plain;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => {
                tls = match value {
                    "disable" | "allow" | "prefer" => TlsMode::Plain,
                    "require" => TlsMode::Require,
                    "verify-ca" => TlsMode::VerifyCa,
                    "verify-full" => TlsMode::VerifyFull,
                    other => {
                        return Err(invalid(format!(
                            "sslmode={other} is not one of disable, allow, prefer, require, \
                                 verify-ca, verify-full"
                        )));
                    }
                }
            }
            "sslrootcert" => root_cert = Some(PathBuf::from(value)),
            _ => kept.push(pair),
        }
    }
    let rebuilt = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config = tokio_postgres::Config::from_str(&rebuilt)
        .map_err(|e| invalid(format!("it does not parse ({e})")))?;
    config.ssl_mode(if tls == TlsMode::Plain {
        SslMode::Disable
    } else {
        SslMode::Require
    });
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("gantry");
    }
    // A client stopped in the middle of a transaction (a process frozen, a laptop asleep)
    // must not keep its row locks: the fence check's share lock on a cluster lock's row would
    // keep another run from taking the lock over for as long as the stalled process lives. The
    // server ends such a session after IDLE_IN_TRANSACTION; gantry's transactions are a few
    // statements sent back to back.
    let idle = format!(
        "-c idle_in_transaction_session_timeout={}",
        IDLE_IN_TRANSACTION.as_millis()
    );
    let options = match config.get_options() {
        Some(given) if given.contains("idle_in_transaction_session_timeout") => given.to_owned(),
        Some(given) => format!("{given} {idle}"),
        None => idle,
    };
    config.options(&options);
    let endpoint = endpoint(&config);
    Ok(Target {
        config,
        tls,
        root_cert,
        redacted,
        endpoint,
    })
}

/// `host:port[,host:port…]` as the driver will try them.
fn endpoint(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let port = |i: usize| match ports {
        [] => 5432,
        [one] => *one,
        many => many.get(i).copied().unwrap_or(5432),
    };
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| match host {
            Host::Tcp(h) if h.contains(':') => format!("[{h}]:{}", port(i)),
            Host::Tcp(h) => format!("{h}:{}", port(i)),
            Host::Unix(dir) => format!("{}/.s.PGSQL.{}", dir.display(), port(i)),
        })
        .collect();
    if hosts.is_empty() {
        // tokio-postgres needs a host; its own error says so.
        format!("(no host):{}", port(0))
    } else {
        hosts.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_is_parsed_with_gantry_tls_options() {
        let t = parse(
            "postgres://u:pw@127.0.0.1:6543/db?sslmode=verify-full&sslrootcert=/x/ca.pem&\
             application_name=me",
        )
        .unwrap();
        assert_eq!(t.tls, TlsMode::VerifyFull);
        assert_eq!(t.root_cert, Some(PathBuf::from("/x/ca.pem")));
        assert_eq!(t.endpoint, "127.0.0.1:6543");
        assert_eq!(t.config.get_application_name(), Some("me"));
        assert_eq!(t.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(
            t.redacted,
            "postgres://u:***@127.0.0.1:6543/db?sslmode=verify-full&sslrootcert=/x/ca.pem&\
             application_name=me"
        );

        let plain = parse("postgres://u@db/x").unwrap();
        assert_eq!(plain.tls, TlsMode::Plain);
        assert_eq!(plain.endpoint, "db:5432");
        assert_eq!(plain.config.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
    }

    /// A stalled client's open transaction cannot hold its row locks (the fence check's share
    /// lock on a cluster lock's row) for longer than the server's idle-in-transaction timeout.
    #[test]
    fn sessions_end_an_idle_transaction_unless_the_url_says_otherwise() {
        let t = parse("postgres://u@db/x").unwrap();
        assert_eq!(
            t.config.get_options(),
            Some("-c idle_in_transaction_session_timeout=5000")
        );
        let t = parse("postgres://u@db/x?options=-c%20work_mem%3D8MB").unwrap();
        assert_eq!(
            t.config.get_options(),
            Some("-c work_mem=8MB -c idle_in_transaction_session_timeout=5000")
        );
        let t = parse("postgres://u@db/x?options=-c%20idle_in_transaction_session_timeout%3D0")
            .unwrap();
        assert_eq!(
            t.config.get_options(),
            Some("-c idle_in_transaction_session_timeout=0")
        );
    }

    #[test]
    fn bad_urls_are_refused_without_their_password() {
        for url in [
            "mysql://u:hunter2@h/db",
            "postgres://u:hunter2@h/db?sslmode=sometimes",
            "postgres://u:hunter2@h:notaport/db",
            "postgres://u:hunter2@h/db?password=hunter2&nosuchoption=1",
        ] {
            let err = parse(url).err().expect("refused");
            let message = err.to_string();
            assert!(matches!(err, StateError::InvalidArgument { .. }), "{url}");
            assert!(!message.contains("hunter2"), "{message}");
        }
    }
}
