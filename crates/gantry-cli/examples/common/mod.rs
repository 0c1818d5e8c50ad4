//! Opening a store by its URL for the bench helpers (what `gantry`'s `--state` does).

use std::error::Error;
use std::sync::Arc;

use gantry_state::{SqliteStore, StateStore, StateUrl};

pub async fn open(url: &str) -> Result<Arc<dyn StateStore>, Box<dyn Error>> {
    let url = StateUrl::parse(url)?;
    Ok(match &url {
        StateUrl::Sqlite { path } => Arc::new(SqliteStore::open(path)?),
        StateUrl::Postgres { url } => Arc::new(gantry_state_pg::PostgresStore::connect(url).await?),
        StateUrl::Etcd { .. } => {
            Arc::new(gantry_state_etcd::EtcdStore::connect_state_url(&url).await?)
        }
    })
}
