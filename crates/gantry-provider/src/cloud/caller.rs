//! The caller's address for `from: caller` rules, for every provider with a firewall: the
//! spec's own CIDR (AWS: `caller_cidr`), else `GANTRY_CALLER_CIDR`, else detected with one HTTPS
//! GET to a "what is my IP" service (`https://checkip.amazonaws.com`, or `GANTRY_CALLER_IP_URL`)
//! whose answer is the address as text; it becomes a /32 (IPv4) or /128 (IPv6). [`resolve`] is
//! the whole rule, with the message and hint a provider returns when nothing gives the address.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// The environment variable `from: caller` stands for when the spec gives no CIDR.
pub const CALLER_CIDR_ENV: &str = "GANTRY_CALLER_CIDR";
/// The environment variable naming the "what is my IP" URL.
pub const CALLER_IP_URL_ENV: &str = "GANTRY_CALLER_IP_URL";
/// Where the caller's address is asked when nothing gives it.
pub const DEFAULT_CALLER_IP_URL: &str = "https://checkip.amazonaws.com";
/// The whole request (connect, TLS, answer) must take at most this long.
pub const DETECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A longer answer is not an address.
const MAX_ANSWER: u64 = 256;

/// The URL to ask: `explicit`, else `GANTRY_CALLER_IP_URL`, else [`DEFAULT_CALLER_IP_URL`].
pub fn url(explicit: Option<&str>) -> String {
    if let Some(u) = explicit {
        return u.to_string();
    }
    match std::env::var(CALLER_IP_URL_ENV) {
        Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
        _ => DEFAULT_CALLER_IP_URL.to_string(),
    }
}

/// An answer (`198.51.100.23\n`) → its CIDR (`198.51.100.23/32`; IPv6: `/128`).
pub fn cidr_of_answer(body: &str) -> Option<String> {
    let ip: IpAddr = body.trim().parse().ok()?;
    if ip.is_unspecified() {
        return None;
    }
    Some(match ip {
        IpAddr::V4(v4) => format!("{v4}/32"),
        IpAddr::V6(v6) => format!("{v6}/128"),
    })
}

/// Whether `url`'s host is a loopback address (then no proxy from the environment is used).
fn loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let host = if let Some(h) = host.strip_prefix('[') {
        h.split(']').next().unwrap_or("")
    } else {
        host.split(':').next().unwrap_or("")
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// GETs `url` (at most [`DETECT_TIMEOUT`]) and reads the caller's address from the answer.
/// The error says what went wrong, for the caller's message.
pub async fn detect(url: &str) -> Result<String, String> {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || detect_blocking(&url))
        .await
        .map_err(|e| format!("the detection task failed: {e}"))?
}

fn detect_blocking(url: &str) -> Result<String, String> {
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .build();
    let mut cfg = ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_global(Some(DETECT_TIMEOUT))
        .http_status_as_error(false)
        .max_redirects(3);
    if loopback(url) {
        cfg = cfg.proxy(None);
    }
    let agent = cfg.build().new_agent();
    let mut resp = agent.get(url).call().map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(format!("HTTP {status}"));
    }
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER)
        .read_to_string()
        .map_err(|e| format!("reading the answer: {e}"))?;
    cidr_of_answer(&body).ok_or_else(|| {
        let shown: String = body.trim().chars().take(60).collect();
        format!("the answer {shown:?} is not an IP address")
    })
}

/// Whether `allow` uses the caller's address (an empty list is the default: SSH from the
/// caller).
pub fn needs_caller(allow: &[gantry_core::AllowRule]) -> bool {
    allow.is_empty() || allow.iter().any(|r| r.from == "caller")
}

/// Why the caller's address is not known: a message and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    pub message: String,
    pub hint: String,
}

/// The CIDR `from: caller` stands for: `explicit` (the spec's), else `GANTRY_CALLER_CIDR`, else
/// the address the service at `url` (else `GANTRY_CALLER_IP_URL`, else the default) sees.
/// `option`: how the spec names its own setting, for the hint (`caller_cidr` under
/// `provider: {aws: ...}`).
pub async fn resolve(
    explicit: Option<&str>,
    url_override: Option<&str>,
    option: &str,
) -> Result<String, Unresolved> {
    if let Some(c) = explicit {
        return Ok(c.to_string());
    }
    if let Ok(v) = std::env::var(CALLER_CIDR_ENV)
        && !v.trim().is_empty()
    {
        return Ok(v.trim().to_string());
    }
    let url = url(url_override);
    match detect(&url).await {
        Ok(cidr) => {
            tracing::info!(%cidr, %url, "detected the caller's address");
            Ok(cidr)
        }
        Err(why) => Err(Unresolved {
            message: format!(
                "a rule allows `from: caller` (the default: ssh from the caller) but the \
                 caller's address is not known: neither {option} nor {CALLER_CIDR_ENV} is set, \
                 and detecting it with GET {url} failed: {why}"
            ),
            hint: format!(
                "set the environment variable {CALLER_CIDR_ENV}=YOUR.PUBLIC.IP/32 (or {option}), \
                 or point {CALLER_IP_URL_ENV} at a service that answers your address"
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_become_host_cidrs() {
        assert_eq!(
            cidr_of_answer("198.51.100.23\n").as_deref(),
            Some("198.51.100.23/32")
        );
        assert_eq!(
            cidr_of_answer("  2001:db8::7 \r\n").as_deref(),
            Some("2001:db8::7/128")
        );
        assert_eq!(cidr_of_answer("<html>nope</html>"), None);
        assert_eq!(cidr_of_answer(""), None);
        assert_eq!(cidr_of_answer("0.0.0.0"), None);
        assert_eq!(cidr_of_answer("198.51.100.23/24"), None);
    }

    #[test]
    fn loopback_urls_are_recognised() {
        assert!(loopback("http://127.0.0.1:8080/ip"));
        assert!(loopback("http://localhost/"));
        assert!(loopback("http://[::1]:9/"));
        assert!(!loopback("https://checkip.amazonaws.com"));
        assert!(!loopback("http://10.0.0.1:80/"));
    }

    #[test]
    fn explicit_url_wins() {
        assert_eq!(url(Some("http://127.0.0.1:9/")), "http://127.0.0.1:9/");
    }
}
