//! A state machine on a real RocksDB in a temporary directory, applying commands as log
//! entries one by one: what the apply tests drive.

use super::*;
use crate::meta::events::{EventRecord, Seq, WebhookRecord, CLUSTER_LANE};
use meridian_replication::Algorithm;

pub struct Machine {
    _dir: tempfile::TempDir,
    pub sm: StateMachine,
    index: u64,
}

impl Machine {
    pub fn new() -> Machine {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let sm = StateMachine::new(store, "us".into(), dir.path());
        Machine { _dir: dir, sm, index: 0 }
    }

    /// Applies `cmd` as the next log entry.
    pub fn apply(&mut self, cmd: Command) -> CommandResult {
        self.index += 1;
        let mut batch = WriteBatch::default();
        let mut events = EventBook::new(&self.sm.store, self.index);
        let result = self.sm.apply_command(&mut batch, &cmd, &mut events).unwrap();
        self.sm.store.write(batch).unwrap();
        result
    }

    pub fn events(&self) -> Vec<(Seq, EventRecord)> {
        self.sm.store.events_after(CLUSTER_LANE, Seq::default(), usize::MAX).unwrap()
    }
}

pub fn digest(seed: &str) -> Digest {
    Digest::of_bytes(Algorithm::Sha256, seed.as_bytes())
}

pub fn webhook(name: &str, actions: &[&str]) -> WebhookRecord {
    WebhookRecord {
        name: name.into(),
        url: "http://127.0.0.1:9/hook".into(),
        actions: actions.iter().map(|a| a.to_string()).collect(),
        repos: vec![],
        region: None,
        headers: vec![],
        secret: None,
        enabled: true,
        timeout_ms: 1000,
        max_attempts: 3,
        since: Seq::default(),
    }
}
