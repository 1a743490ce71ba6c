//! First start of a cluster: a token-signing key and an `admin` user, created by
//! whichever node leads, once. The admin password comes from `MERIDIAN_ADMIN_PASSWORD`
//! or is generated and written to `<data_dir>/admin-password` (mode 0600) on the node that
//! created it — never to the log, which journald or a log pipeline lets many people read;
//! the log says where the file is.

use super::{jwt, now_unix, password};
use crate::meta::command::{Command, CommandResult};
use crate::meta::records::{Role, UserRecord};
use crate::meta::{Meta, Store};
use std::path::PathBuf;
use std::time::Duration;

pub const ADMIN_USER: &str = "admin";
pub const ADMIN_PASSWORD_ENV: &str = "MERIDIAN_ADMIN_PASSWORD";
pub const ADMIN_PASSWORD_FILE: &str = "admin-password";

/// Named background task: runs until the cluster has a signing key and at least one user.
pub async fn ensure_identities(meta: Meta, store: Store, data_dir: PathBuf, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        match step(&meta, &store, &data_dir).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "auth bootstrap: will retry"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One attempt; `Ok(true)` when nothing is left to do.
async fn step(meta: &Meta, store: &Store, data_dir: &std::path::Path) -> Result<bool, String> {
    let has_key = !store.signing_keys().map_err(|e| e.to_string())?.is_empty();
    let has_user = !store.users().map_err(|e| e.to_string())?.is_empty();
    if has_key && has_user {
        return Ok(true);
    }
    // Only the leader creates them, so two nodes never race with different secrets.
    if !meta.is_leader() {
        return Ok(false);
    }
    if !has_key {
        let key = jwt::new_key(format!("k{}", password::random_secret(8)), now_unix());
        meta.propose(Command::AddSigningKey { key }).await.map_err(|e| e.to_string())?;
        tracing::info!("created the cluster's token-signing key");
    }
    if !has_user {
        let (secret, generated) = match std::env::var(ADMIN_PASSWORD_ENV) {
            Ok(p) if !p.is_empty() => (p, false),
            _ => (password::random_secret(24), true),
        };
        let user = UserRecord {
            name: ADMIN_USER.to_string(),
            password_hash: password::hash(&secret)?,
            role: Role::Admin,
            created_unix: now_unix(),
        };
        let result = meta.propose(Command::PutUser { user, create_only: true }).await.map_err(|e| e.to_string())?;
        if result == CommandResult::Applied {
            if generated {
                let path = data_dir.join(ADMIN_PASSWORD_FILE);
                write_owner_only(&path, &secret).map_err(|e| format!("writing {}: {e}", path.display()))?;
                tracing::warn!(
                    user = ADMIN_USER,
                    file = %path.display(),
                    "created the admin user with a generated password; it is in the file (mode 0600), and only there"
                );
            } else {
                tracing::info!(user = ADMIN_USER, "created the admin user with the password from {ADMIN_PASSWORD_ENV}");
            }
        }
    }
    Ok(false)
}

fn write_owner_only(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp)?;
    f.write_all(secret.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
