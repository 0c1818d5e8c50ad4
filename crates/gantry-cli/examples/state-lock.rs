//! Times cluster-lock round trips (acquire, then release) on a store, for
//! `benches/state-stores.sh`: `state-lock STORE_URL ROUNDS` prints the median, p90 and min in
//! microseconds, one lock key per run so earlier runs do not matter.

use std::time::{Duration, Instant};

use gantry_state::Acquire;

mod common;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, rounds] = args.as_slice() else {
        return Err("usage: state-lock STORE_URL ROUNDS".into());
    };
    let rounds: usize = rounds.parse()?;
    let store = common::open(path).await?;
    let key = format!("bench/{}", uuid::Uuid::new_v4());
    let holder = format!("{}@bench", std::process::id());
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let lease = match store
            .acquire_lock(&key, &holder, Duration::from_secs(30))
            .await?
        {
            Acquire::Acquired(lease) => lease,
            other => return Err(format!("lock not taken: {other:?}").into()),
        };
        store.release_lock(&lease).await?;
        times.push(t.elapsed());
    }
    times.sort();
    let us = |d: Duration| d.as_micros();
    println!(
        "median_us={} p90_us={} min_us={} rounds={rounds}",
        us(times[rounds / 2]),
        us(times[rounds * 9 / 10]),
        us(times[0])
    );
    Ok(())
}
