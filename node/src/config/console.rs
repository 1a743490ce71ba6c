//! `[console]`: the web console every node serves under `/ui/` on its registry listener.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Serve the console (off: `/ui/` answers 404 like any unknown path).
    pub enabled: bool,
    /// A console session ends this long after its login, whatever its use.
    pub session_ttl_secs: u64,
    /// A console session unused for this long ends.
    pub idle_timeout_secs: u64,
    /// Rows on a page of repositories or tags (at most `MAX_PAGE_SIZE`).
    pub page_size: usize,
    /// Administrators may manage users, robot tokens and scope maps in the console (off:
    /// only `meridian admin`, with the admin token, can).
    pub manage_identities: bool,
}

/// The most rows one console page shows, whatever `page_size` says.
pub const MAX_PAGE_SIZE: usize = 500;

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig { enabled: true, session_ttl_secs: 8 * 3600, idle_timeout_secs: 30 * 60, page_size: 100, manage_identities: true }
    }
}

impl ConsoleConfig {
    /// `page_size`, between 1 and `MAX_PAGE_SIZE`.
    pub fn rows(&self) -> usize {
        self.page_size.clamp(1, MAX_PAGE_SIZE)
    }
}
