//! Every environment variable gantry reads, as one documented constant each (used by clap's
//! `env =` and by the docs). A provider's own variables live in its crate (AWS regions to list:
//! `GANTRY_AWS_REGIONS`, read by the aws provider kind).

/// Where gantry keeps all its data (state DB, keys, local nodes). Default:
/// `$XDG_DATA_HOME/gantry`, else `~/.local/share/gantry`.
pub const GANTRY_HOME: &str = "GANTRY_HOME";
/// Where the state lives: `sqlite://PATH`, `postgres://USER@HOST/DB` or `etcd://HOST:PORT`,
/// like `--state`. Default: `sqlite://$GANTRY_HOME/state.db`.
pub const GANTRY_STATE: &str = "GANTRY_STATE";
/// The project (namespace) to act in. Default: `default`.
pub const GANTRY_PROJECT: &str = "GANTRY_PROJECT";
/// `text` or `json`.
pub const GANTRY_OUTPUT: &str = "GANTRY_OUTPUT";
/// How long to wait for another run's cluster lock, e.g. `60s`.
pub const GANTRY_LOCK_TIMEOUT: &str = "GANTRY_LOCK_TIMEOUT";
/// The cluster lock's lease in milliseconds (default 30000, clamped to 500..=600000). For
/// tests that need a lease to lapse quickly (the fencing test); hidden from `--help`.
pub const GANTRY_LOCK_TTL_MS: &str = "GANTRY_LOCK_TTL_MS";
/// Log filter (tracing `EnvFilter` syntax), e.g. `debug`.
pub const GANTRY_LOG: &str = "GANTRY_LOG";
/// Maximum number of nodes `run`/`put`/`get` talk to at once.
pub const GANTRY_CONCURRENCY: &str = "GANTRY_CONCURRENCY";
/// `1` lets `up` install packages that blueprint artifacts name (apt-get), like
/// `--allow-packages`.
pub const GANTRY_ALLOW_PACKAGES: &str = "GANTRY_ALLOW_PACKAGES";
/// How long `gantry ls` serves a region's cached listing, e.g. `5m`; `0s` never does. Like
/// `--max-age`; default `60s`.
pub const GANTRY_LS_MAX_AGE: &str = "GANTRY_LS_MAX_AGE";
/// The key provider that seals secrets in the state store: `keyfile:PATH`, `passphrase`,
/// `openbao://transit/KEY` or `awskms://KEY`. Default with a SQLite store:
/// `keyfile:$GANTRY_HOME/secrets.key` (created on first use); required with a shared store.
pub const GANTRY_KEY_PROVIDER: &str = "GANTRY_KEY_PROVIDER";
/// The passphrase of the `passphrase` provider (else a prompt on a terminal).
pub const GANTRY_PASSPHRASE: &str = "GANTRY_PASSPHRASE";
/// The old passphrase when `gantry secrets rotate --from passphrase` (else a prompt).
pub const GANTRY_OLD_PASSPHRASE: &str = "GANTRY_OLD_PASSPHRASE";
/// The OpenBao/Vault server of `openbao://` (`BAO_ADDR` first, then `VAULT_ADDR`).
pub const BAO_ADDR: &str = "BAO_ADDR";
pub const VAULT_ADDR: &str = "VAULT_ADDR";
/// The token for `openbao://` (`BAO_TOKEN` first, then `VAULT_TOKEN`).
pub const BAO_TOKEN: &str = "BAO_TOKEN";
pub const VAULT_TOKEN: &str = "VAULT_TOKEN";
