//! Meridian's gRPC services, generated from `proto/meridian/*.proto`.

/// Node-to-node services: Raft transport, write forwarding, identity.
pub mod cluster {
    tonic::include_proto!("meridian.cluster");
}

/// The operator's admin service.
pub mod admin {
    tonic::include_proto!("meridian.admin");

    /// Shown in place of a secret in debug output.
    const REDACTED: &str = "<redacted>";

    impl std::fmt::Debug for PutUserRequest {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("PutUserRequest")
                .field("name", &self.name)
                .field("role", &self.role)
                .field("password", &if self.password.is_empty() { "" } else { REDACTED })
                .field("replace", &self.replace)
                .finish()
        }
    }

    impl std::fmt::Debug for CreatedToken {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("CreatedToken")
                .field("username", &self.username)
                .field("secret_id", &self.secret_id)
                .field("secret", &REDACTED)
                .field("expires_unix", &self.expires_unix)
                .field("scope_map", &self.scope_map)
                .field("created", &self.created)
                .finish()
        }
    }
}

/// Blob transfer between regions.
pub mod replication {
    tonic::include_proto!("meridian.replication");
}

#[cfg(test)]
mod tests {
    use super::admin::{CreatedToken, PutUserRequest};

    #[test]
    fn debug_output_leaves_secrets_out() {
        let put = PutUserRequest { name: "ops".into(), role: "admin".into(), password: "hunter2-secret".into(), replace: false };
        let shown = format!("{put:?} {put:#?}");
        assert!(!shown.contains("hunter2-secret"), "{shown}");
        assert!(shown.contains("ops") && shown.contains("<redacted>"), "{shown}");

        let token = CreatedToken { username: "robot$ci".into(), secret_id: "s1".into(), secret: "tok-secret-value".into(), ..Default::default() };
        let shown = format!("{token:?} {token:#?}");
        assert!(!shown.contains("tok-secret-value"), "{shown}");
        assert!(shown.contains("robot$ci") && shown.contains("s1"), "{shown}");
    }
}
