//! gantry-state-etcd's integration tests, in one binary against one real etcd 3.4 that the
//! binary starts once (`scripts/services.sh start etcd`, see `support`): the shared
//! conformance suite (`conformance`), concurrent writers and lock races between two store
//! handles acting as two machines (`races`), and what a user sees when something is wrong
//! (`faults`). Every test works under its own random key prefix, so they run in parallel.

mod conformance;
mod faults;
mod migrate;
mod races;
mod support;
