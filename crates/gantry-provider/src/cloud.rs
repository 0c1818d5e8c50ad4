//! What every cloud provider needs and none should write again: the caller's address for
//! `from: caller` rules ([`caller`]), firewall rules and their diff against what gantry added
//! before ([`rules`]), and the check of place names (regions, zones) a user or an environment
//! variable gives ([`names`]). AWS uses them today; GCP and Azure will.

pub mod caller;
pub mod names;
pub mod rules;
