//! gantry-secrets-awskms against moto's KMS, started once for this binary by
//! `scripts/services.sh start moto` (stopped by PID when the binary exits, and by the script's
//! watcher if it dies first). Without moto a test skips with a reason; under `CI=true` it fails.

mod kms;
