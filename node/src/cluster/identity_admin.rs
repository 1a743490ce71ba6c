//! Who changes the cluster's identities — users, scope maps, robot tokens, signing keys —
//! from this node: the admin service (`meridian admin`) and the web console share one
//! `IdentityAdmin`, so both go through the same checks, the same "never the last admin"
//! rule and the same lock (changes through this node run one at a time, so two removals
//! cannot both pass that rule). The calls themselves are in `admin_users.rs` and
//! `admin_identities.rs`.

use crate::meta::{Meta, Store};

pub struct IdentityAdmin {
    pub meta: Meta,
    store: Store,
    /// Identity changes through this node run one at a time.
    pub users_lock: tokio::sync::Mutex<()>,
}

impl IdentityAdmin {
    pub fn new(meta: Meta, store: Store) -> IdentityAdmin {
        IdentityAdmin { meta, store, users_lock: tokio::sync::Mutex::new(()) }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}
