//! `meridian admin scope-map|token|key …`: scope maps, robot tokens and token-signing keys.
//!
//! Grants and durations are checked here, before connecting (usage error, exit code 2). A
//! new token secret is printed once; nothing else ever shows a secret.

use super::{call, or_dash, pretty, rfc3339_utc, Admin, CliError, SHORT_CALL_TIMEOUT};
use crate::auth::scope::parse_grant;
use crate::cli::table::{key_values, Align, Table};
use clap::Subcommand;
use meridian_proto::admin::{
    CreateTokenRequest, CreatedToken, Empty, KeyId, KeyInfo, Name, RevokeTokenRequest, ScopeMapInfo, TokenInfo,
};
use serde_json::{json, Value};

/// `meridian admin scope-map …`
#[derive(Subcommand, Debug)]
pub enum ScopeMapCommand {
    /// Create a scope map: named grants that robot tokens refer to.
    Create {
        /// The map's name: 1-64 characters of a-z, 0-9, '.', '_', '-' (not reader, writer or admin).
        name: String,
        /// PATTERN:ACTIONS, e.g. `team-a/*:pull,push`, `base/alpine:pull`, `*:*`; repeatable.
        #[arg(long = "grant", value_name = "PATTERN:ACTIONS", required = true)]
        grants: Vec<String>,
    },
    /// Replace a scope map's grants (tokens using it get the new grants).
    Update {
        /// The map's name.
        name: String,
        /// PATTERN:ACTIONS; repeatable. The map gets exactly these grants.
        #[arg(long = "grant", value_name = "PATTERN:ACTIONS", required = true)]
        grants: Vec<String>,
    },
    /// Remove a scope map (refused while a token uses it).
    Remove {
        /// The map's name.
        name: String,
    },
    /// List the scope maps, the built-in ones (reader, writer, admin) first.
    List,
}

/// `meridian admin token …`
#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a robot token (logs in as robot$NAME) with a secret shown once; without
    /// --scope-map, add a new secret to an existing token.
    Create {
        /// The token's name: 1-64 characters of a-z, 0-9, '.', '_', '-'.
        name: String,
        /// What the token may do: a scope map, or reader, writer or admin.
        #[arg(long, value_name = "MAP")]
        scope_map: Option<String>,
        /// The secret stops working after this long: 30d, 12h, 90m, 3600s or seconds.
        /// Default: never.
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
    },
    /// Revoke a token (all its secrets), or with --secret only one of its secrets.
    Revoke {
        /// The token's name.
        name: String,
        /// The id of the secret to revoke (see `token list`).
        #[arg(long = "secret", value_name = "ID")]
        secret: Option<String>,
    },
    /// List the tokens and their secrets' ids and expiry (never the secrets).
    List,
}

/// `meridian admin key …`
#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Add a new token-signing key; it signs from now on, older keys still verify.
    Rotate,
    /// Remove a key: tokens it signed stop verifying (refused for the signing key).
    Retire {
        /// The key's id (see `key list`).
        kid: String,
    },
    /// List the token-signing keys, oldest first (the newest signs).
    List,
}

/// An identity command, checked and ready to send.
#[derive(Debug, PartialEq)]
pub enum IdentityCall {
    PutScopeMap(ScopeMapInfo),
    RemoveScopeMap(String),
    ListScopeMaps,
    CreateToken(CreateTokenRequest),
    RevokeToken(RevokeTokenRequest),
    ListTokens,
    RotateKey,
    RetireKey(String),
    ListKeys,
}

/// Checks every grant with the server's own parser; returns them trimmed.
pub fn check_grants(grants: &[String]) -> Result<Vec<String>, String> {
    if grants.is_empty() {
        return Err("give at least one --grant PATTERN:ACTIONS".to_string());
    }
    grants
        .iter()
        .map(|g| {
            let g = g.trim();
            parse_grant(g).map(|_| g.to_string())
        })
        .collect()
}

/// A duration for `--expires-in` in seconds: `30d`, `12h`, `90m`, `3600s` or `3600`.
pub fn parse_duration(raw: &str) -> Result<u64, String> {
    match super::units::duration_secs(raw) {
        Ok(secs) => Ok(secs),
        Err(e) if e.contains("more than 0") => Err(format!("invalid --expires-in '{raw}': {e} (leave it out for no expiry)")),
        Err(e) => Err(format!("invalid --expires-in '{raw}': {e}")),
    }
}

/// A name given as an option value must not be empty.
fn non_empty(flag: &str, value: &str) -> Result<String, CliError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(CliError::Usage(format!("{flag} is empty")));
    }
    Ok(value.to_string())
}

pub fn prepare_scope_map(cmd: &ScopeMapCommand) -> Result<IdentityCall, CliError> {
    Ok(match cmd {
        ScopeMapCommand::Create { name, grants } | ScopeMapCommand::Update { name, grants } => {
            let grants = check_grants(grants).map_err(CliError::Usage)?;
            let replace = matches!(cmd, ScopeMapCommand::Update { .. });
            IdentityCall::PutScopeMap(ScopeMapInfo { name: name.clone(), grants, replace, ..Default::default() })
        }
        ScopeMapCommand::Remove { name } => IdentityCall::RemoveScopeMap(name.clone()),
        ScopeMapCommand::List => IdentityCall::ListScopeMaps,
    })
}

pub fn prepare_token(cmd: &TokenCommand) -> Result<IdentityCall, CliError> {
    Ok(match cmd {
        TokenCommand::Create { name, scope_map, expires_in } => {
            let scope_map = scope_map.as_deref().map(|m| non_empty("--scope-map", m)).transpose()?.unwrap_or_default();
            let expires_in_secs =
                expires_in.as_deref().map(parse_duration).transpose().map_err(CliError::Usage)?.unwrap_or(0);
            IdentityCall::CreateToken(CreateTokenRequest { name: name.clone(), scope_map, expires_in_secs })
        }
        TokenCommand::Revoke { name, secret } => {
            let secret_id = secret.as_deref().map(|s| non_empty("--secret", s)).transpose()?.unwrap_or_default();
            IdentityCall::RevokeToken(RevokeTokenRequest { name: name.clone(), secret_id })
        }
        TokenCommand::List => IdentityCall::ListTokens,
    })
}

pub fn prepare_key(cmd: &KeyCommand) -> IdentityCall {
    match cmd {
        KeyCommand::Rotate => IdentityCall::RotateKey,
        KeyCommand::Retire { kid } => IdentityCall::RetireKey(kid.clone()),
        KeyCommand::List => IdentityCall::ListKeys,
    }
}

pub async fn run_identity(admin: &Admin, prepared: IdentityCall, json: bool) -> Result<String, CliError> {
    let mut client = admin.client.clone();
    match prepared {
        IdentityCall::PutScopeMap(request) => {
            let replace = request.replace;
            let reply = call(SHORT_CALL_TIMEOUT, client.put_scope_map(admin.request(request))).await?;
            Ok(if json { pretty(&scope_map_json(&reply)) } else { render_scope_map_saved(&reply, replace) })
        }
        IdentityCall::RemoveScopeMap(name) => {
            call(SHORT_CALL_TIMEOUT, client.remove_scope_map(admin.request(Name { name: name.clone() }))).await?;
            Ok(if json { pretty(&json!({ "removed": name })) } else { format!("scope map {name} removed\n") })
        }
        IdentityCall::ListScopeMaps => {
            let reply = call(SHORT_CALL_TIMEOUT, client.list_scope_maps(admin.request(Empty {}))).await?;
            Ok(if json { pretty(&scope_maps_json(&reply.scope_maps)) } else { render_scope_maps(&reply.scope_maps) })
        }
        IdentityCall::CreateToken(request) => {
            let name = request.name.clone();
            let reply = call(SHORT_CALL_TIMEOUT, client.create_token(admin.request(request))).await?;
            Ok(if json { pretty(&token_created_json(&name, &reply)) } else { render_token_created(&name, &reply) })
        }
        IdentityCall::RevokeToken(request) => {
            let (name, secret_id) = (request.name.clone(), request.secret_id.clone());
            call(SHORT_CALL_TIMEOUT, client.revoke_token(admin.request(request))).await?;
            Ok(if json { pretty(&token_revoked_json(&name, &secret_id)) } else { render_token_revoked(&name, &secret_id) })
        }
        IdentityCall::ListTokens => {
            let reply = call(SHORT_CALL_TIMEOUT, client.list_tokens(admin.request(Empty {}))).await?;
            Ok(if json {
                pretty(&tokens_json(&reply.tokens))
            } else {
                render_tokens(&reply.tokens, crate::auth::now_unix())
            })
        }
        IdentityCall::RotateKey => {
            let reply = call(SHORT_CALL_TIMEOUT, client.rotate_key(admin.request(Empty {}))).await?;
            Ok(if json { pretty(&key_json(&reply)) } else { render_key_rotated(&reply) })
        }
        IdentityCall::RetireKey(kid) => {
            call(SHORT_CALL_TIMEOUT, client.retire_key(admin.request(KeyId { kid: kid.clone() }))).await?;
            Ok(if json {
                pretty(&json!({ "retired": kid }))
            } else {
                format!("key {kid} retired; tokens it signed no longer verify\n")
            })
        }
        IdentityCall::ListKeys => {
            let reply = call(SHORT_CALL_TIMEOUT, client.list_keys(admin.request(Empty {}))).await?;
            Ok(if json { pretty(&keys_json(&reply.keys)) } else { render_keys(&reply.keys) })
        }
    }
}

// ------------------------------------------------------------------ JSON output

/// Seconds since the epoch, or null for 0 ("never").
fn unix_or_null(unix: u64) -> Value {
    if unix == 0 {
        Value::Null
    } else {
        json!(unix)
    }
}

/// `{"name", "builtin", "created_unix", "grants": ["PATTERN:ACTIONS"]}`
fn scope_map_json(m: &ScopeMapInfo) -> Value {
    json!({ "name": m.name, "builtin": m.builtin, "created_unix": m.created_unix, "grants": m.grants })
}

/// `{"scope_maps": [scope map]}`
fn scope_maps_json(maps: &[ScopeMapInfo]) -> Value {
    json!({ "scope_maps": maps.iter().map(scope_map_json).collect::<Vec<_>>() })
}

/// `{"name", "username", "scope_map", "secret_id", "secret", "expires_unix" (null: never), "created"}`
fn token_created_json(name: &str, t: &CreatedToken) -> Value {
    json!({
        "name": name,
        "username": t.username,
        "scope_map": t.scope_map,
        "secret_id": t.secret_id,
        "secret": t.secret,
        "expires_unix": unix_or_null(t.expires_unix),
        "created": t.created,
    })
}

/// `{"revoked": NAME, "secret_id": ID or null (the whole token)}`
fn token_revoked_json(name: &str, secret_id: &str) -> Value {
    json!({ "revoked": name, "secret_id": if secret_id.is_empty() { Value::Null } else { json!(secret_id) } })
}

fn token_json(t: &TokenInfo) -> Value {
    json!({
        "name": t.name,
        "username": t.username,
        "scope_map": t.scope_map,
        "created_unix": t.created_unix,
        "secrets": t.secrets.iter().map(|s| json!({
            "id": s.id,
            "created_unix": s.created_unix,
            "expires_unix": unix_or_null(s.expires_unix),
        })).collect::<Vec<_>>(),
    })
}

/// `{"tokens": [{"name", "username", "scope_map", "created_unix", "secrets": [{"id", "created_unix", "expires_unix"}]}]}`
fn tokens_json(tokens: &[TokenInfo]) -> Value {
    json!({ "tokens": tokens.iter().map(token_json).collect::<Vec<_>>() })
}

/// `{"kid", "created_unix", "signing"}`
fn key_json(k: &KeyInfo) -> Value {
    json!({ "kid": k.kid, "created_unix": k.created_unix, "signing": k.signing })
}

/// `{"keys": [key]}`, oldest first.
fn keys_json(keys: &[KeyInfo]) -> Value {
    json!({ "keys": keys.iter().map(key_json).collect::<Vec<_>>() })
}

// ------------------------------------------------------------------ human output

/// What was saved, then one grant per line.
pub fn render_scope_map_saved(m: &ScopeMapInfo, replaced: bool) -> String {
    let name = or_dash(&m.name);
    let mut out = if replaced {
        format!("scope map {name} updated; its grants are now:\n")
    } else {
        format!("scope map {name} created with grants:\n")
    };
    for g in &m.grants {
        out.push_str(&format!("  {g}\n"));
    }
    out
}

/// The scope maps table: NAME, KIND (built-in or custom), CREATED, GRANTS.
pub fn render_scope_maps(maps: &[ScopeMapInfo]) -> String {
    let mut table =
        Table::new(&[("NAME", Align::Left), ("KIND", Align::Left), ("CREATED", Align::Left), ("GRANTS", Align::Left)]);
    for m in maps {
        table.row(vec![
            or_dash(&m.name),
            if m.builtin { "built-in" } else { "custom" }.to_string(),
            rfc3339_utc(m.created_unix),
            or_dash(&m.grants.join(" ")),
        ]);
    }
    table.render()
}

/// An expiry time: `never`, or the time, marked `(expired)` once `now` has reached it.
fn expiry(expires_unix: u64, now: u64) -> String {
    match expires_unix {
        0 => "never".to_string(),
        t if t <= now => format!("{} (expired)", rfc3339_utc(t)),
        t => rfc3339_utc(t),
    }
}

/// What happened, then the login: user name, the secret (once), its id and expiry.
pub fn render_token_created(name: &str, t: &CreatedToken) -> String {
    let scope_map = or_dash(&t.scope_map);
    let mut out = if t.created {
        format!("token {name} created with scope map {scope_map}\n")
    } else {
        format!("new secret added to token {name} (scope map {scope_map})\n")
    };
    out.push_str(&key_values(&[
        ("username", or_dash(&t.username)),
        ("secret", format!("{}  (shown only now)", t.secret)),
        ("secret id", or_dash(&t.secret_id)),
        ("expires", if t.expires_unix == 0 { "never".to_string() } else { rfc3339_utc(t.expires_unix) }),
    ]));
    out
}

pub fn render_token_revoked(name: &str, secret_id: &str) -> String {
    if secret_id.is_empty() {
        format!("token {name} revoked\n")
    } else {
        format!("secret {secret_id} of token {name} revoked\n")
    }
}

/// The tokens table, one row per secret: NAME, USERNAME, SCOPE MAP, SECRET (its id),
/// CREATED, EXPIRES. A token without secrets gets one row with `-` for the secret.
pub fn render_tokens(tokens: &[TokenInfo], now: u64) -> String {
    let mut table = Table::new(&[
        ("NAME", Align::Left),
        ("USERNAME", Align::Left),
        ("SCOPE MAP", Align::Left),
        ("SECRET", Align::Left),
        ("CREATED", Align::Left),
        ("EXPIRES", Align::Left),
    ]);
    for t in tokens {
        let head = [or_dash(&t.name), or_dash(&t.username), or_dash(&t.scope_map)];
        if t.secrets.is_empty() {
            let mut row = head.to_vec();
            row.extend(["-".to_string(), rfc3339_utc(t.created_unix), "-".to_string()]);
            table.row(row);
        }
        for s in &t.secrets {
            let mut row = head.to_vec();
            row.extend([or_dash(&s.id), rfc3339_utc(s.created_unix), expiry(s.expires_unix, now)]);
            table.row(row);
        }
    }
    table.render()
}

pub fn render_key_rotated(k: &KeyInfo) -> String {
    format!(
        "new signing key {} created at {}; it signs new tokens, older keys still verify until retired\n",
        or_dash(&k.kid),
        rfc3339_utc(k.created_unix)
    )
}

/// The keys table: KID, CREATED, SIGNING (yes for the newest key).
pub fn render_keys(keys: &[KeyInfo]) -> String {
    let mut table = Table::new(&[("KID", Align::Left), ("CREATED", Align::Left), ("SIGNING", Align::Left)]);
    for k in keys {
        table.row(vec![or_dash(&k.kid), rfc3339_utc(k.created_unix), if k.signing { "yes" } else { "no" }.to_string()]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_proto::admin::TokenSecretInfo;

    fn scope_map(name: &str, builtin: bool, created_unix: u64, grants: &[&str]) -> ScopeMapInfo {
        ScopeMapInfo {
            name: name.to_string(),
            grants: grants.iter().map(|g| g.to_string()).collect(),
            replace: false,
            builtin,
            created_unix,
        }
    }

    fn token(name: &str, map: &str, created_unix: u64, secrets: &[(&str, u64, u64)]) -> TokenInfo {
        TokenInfo {
            name: name.to_string(),
            username: format!("robot${name}"),
            scope_map: map.to_string(),
            created_unix,
            secrets: secrets
                .iter()
                .map(|(id, created, expires)| TokenSecretInfo {
                    id: id.to_string(),
                    created_unix: *created,
                    expires_unix: *expires,
                })
                .collect(),
        }
    }

    fn created(created: bool, expires_unix: u64) -> CreatedToken {
        CreatedToken {
            username: "robot$ci".into(),
            secret_id: "ab12cd34".into(),
            secret: "S3cretS3cretS3cret".into(),
            expires_unix,
            scope_map: "team-a".into(),
            created,
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d"), Ok(30 * 86_400));
        assert_eq!(parse_duration("12h"), Ok(12 * 3_600));
        assert_eq!(parse_duration("90m"), Ok(5_400));
        assert_eq!(parse_duration("3600s"), Ok(3_600));
        assert_eq!(parse_duration(" 3600 "), Ok(3_600));
        for bad in ["", "d", "0", "0d", "-5", "1.5h", "10w", "10 d", "h10", "99999999999999999999", "18446744073709551615d"] {
            assert!(parse_duration(bad).unwrap_err().contains("--expires-in"), "{bad:?}");
        }
    }

    #[test]
    fn grants_are_checked_before_sending() {
        assert_eq!(
            check_grants(&[" team-a/*:pull,push ".into(), "*:*".into()]).unwrap(),
            vec!["team-a/*:pull,push".to_string(), "*:*".to_string()]
        );
        assert!(check_grants(&[]).is_err());
        assert!(check_grants(&["team-a/*".into()]).is_err());
        assert!(check_grants(&["team-a/*:fly".into()]).is_err());
        let err = prepare_scope_map(&ScopeMapCommand::Create { name: "m".into(), grants: vec!["x:nope".into()] }).unwrap_err();
        assert!(matches!(err, CliError::Usage(_)));
        assert_eq!(err.exit_code(), std::process::ExitCode::from(2));
    }

    #[test]
    fn prepared_calls() {
        let update = prepare_scope_map(&ScopeMapCommand::Update { name: "m".into(), grants: vec!["a/*:pull".into()] });
        assert_eq!(
            update.unwrap(),
            IdentityCall::PutScopeMap(ScopeMapInfo {
                name: "m".into(),
                grants: vec!["a/*:pull".into()],
                replace: true,
                ..Default::default()
            })
        );
        let create = prepare_token(&TokenCommand::Create {
            name: "ci".into(),
            scope_map: Some("team-a".into()),
            expires_in: Some("1h".into()),
        });
        assert_eq!(
            create.unwrap(),
            IdentityCall::CreateToken(CreateTokenRequest {
                name: "ci".into(),
                scope_map: "team-a".into(),
                expires_in_secs: 3_600
            })
        );
        let add = prepare_token(&TokenCommand::Create { name: "ci".into(), scope_map: None, expires_in: None });
        assert_eq!(
            add.unwrap(),
            IdentityCall::CreateToken(CreateTokenRequest { name: "ci".into(), scope_map: String::new(), expires_in_secs: 0 })
        );
        let bad = prepare_token(&TokenCommand::Create { name: "ci".into(), scope_map: None, expires_in: Some("soon".into()) });
        assert!(matches!(bad.unwrap_err(), CliError::Usage(_)));
        let empty = prepare_token(&TokenCommand::Revoke { name: "ci".into(), secret: Some(" ".into()) });
        assert!(matches!(empty.unwrap_err(), CliError::Usage(_)));
        assert_eq!(
            prepare_token(&TokenCommand::Revoke { name: "ci".into(), secret: None }).unwrap(),
            IdentityCall::RevokeToken(RevokeTokenRequest { name: "ci".into(), secret_id: String::new() })
        );
        assert_eq!(prepare_key(&KeyCommand::Retire { kid: "k1".into() }), IdentityCall::RetireKey("k1".into()));
    }

    #[test]
    fn scope_maps_table() {
        let maps = [
            scope_map("reader", true, 0, &["*:pull"]),
            scope_map("admin", true, 0, &["*:*"]),
            scope_map("team-a", false, 1_714_564_800, &["team-a/*:pull,push", "base/alpine:pull"]),
        ];
        assert_eq!(
            render_scope_maps(&maps),
            "NAME    KIND      CREATED               GRANTS\n\
             reader  built-in  -                     *:pull\n\
             admin   built-in  -                     *:*\n\
             team-a  custom    2024-05-01T12:00:00Z  team-a/*:pull,push base/alpine:pull\n"
        );
        assert_eq!(render_scope_maps(&[]), "NAME  KIND  CREATED  GRANTS\n");
    }

    #[test]
    fn scope_map_saved_lines() {
        let m = scope_map("team-a", false, 7, &["team-a/*:pull,push", "*:pull"]);
        assert_eq!(
            render_scope_map_saved(&m, false),
            "scope map team-a created with grants:\n  team-a/*:pull,push\n  *:pull\n"
        );
        assert_eq!(
            render_scope_map_saved(&m, true),
            "scope map team-a updated; its grants are now:\n  team-a/*:pull,push\n  *:pull\n"
        );
    }

    #[test]
    fn scope_map_json_documents() {
        let m = scope_map("team-a", false, 7, &["team-a/*:pull"]);
        let parsed: Value = serde_json::from_str(&pretty(&scope_maps_json(&[scope_map("writer", true, 0, &["*:pull,push"]), m.clone()]))).unwrap();
        assert_eq!(
            parsed,
            json!({"scope_maps": [
                {"name": "writer", "builtin": true, "created_unix": 0, "grants": ["*:pull,push"]},
                {"name": "team-a", "builtin": false, "created_unix": 7, "grants": ["team-a/*:pull"]},
            ]})
        );
        assert_eq!(scope_map_json(&m), json!({"name": "team-a", "builtin": false, "created_unix": 7, "grants": ["team-a/*:pull"]}));
    }

    #[test]
    fn token_created_lines() {
        assert_eq!(
            render_token_created("ci", &created(true, 0)),
            "token ci created with scope map team-a\n\
             username:   robot$ci\n\
             secret:     S3cretS3cretS3cret  (shown only now)\n\
             secret id:  ab12cd34\n\
             expires:    never\n"
        );
        assert_eq!(
            render_token_created("ci", &created(false, 1_714_564_800)),
            "new secret added to token ci (scope map team-a)\n\
             username:   robot$ci\n\
             secret:     S3cretS3cretS3cret  (shown only now)\n\
             secret id:  ab12cd34\n\
             expires:    2024-05-01T12:00:00Z\n"
        );
    }

    #[test]
    fn token_json_documents() {
        assert_eq!(
            token_created_json("ci", &created(true, 0)),
            json!({"name": "ci", "username": "robot$ci", "scope_map": "team-a", "secret_id": "ab12cd34",
                   "secret": "S3cretS3cretS3cret", "expires_unix": null, "created": true})
        );
        assert_eq!(token_created_json("ci", &created(false, 9))["expires_unix"], json!(9));
        assert_eq!(token_revoked_json("ci", ""), json!({"revoked": "ci", "secret_id": null}));
        assert_eq!(token_revoked_json("ci", "ab12"), json!({"revoked": "ci", "secret_id": "ab12"}));
        let tokens = [token("ci", "writer", 5, &[("ab12cd34", 6, 0), ("ef56gh78", 7, 100)])];
        let parsed: Value = serde_json::from_str(&pretty(&tokens_json(&tokens))).unwrap();
        assert_eq!(
            parsed,
            json!({"tokens": [{"name": "ci", "username": "robot$ci", "scope_map": "writer", "created_unix": 5,
                               "secrets": [{"id": "ab12cd34", "created_unix": 6, "expires_unix": null},
                                           {"id": "ef56gh78", "created_unix": 7, "expires_unix": 100}]}]})
        );
    }

    #[test]
    fn revoked_lines() {
        assert_eq!(render_token_revoked("ci", ""), "token ci revoked\n");
        assert_eq!(render_token_revoked("ci", "ab12cd34"), "secret ab12cd34 of token ci revoked\n");
    }

    #[test]
    fn tokens_table() {
        let now = 1_714_564_800;
        let tokens = [
            token("ci", "team-a", now - 86_400, &[("ab12cd34", now - 86_400, 0), ("ef56gh78", now - 3_600, now)]),
            token("deploy", "writer", now - 60, &[("q1w2e3r4", now - 60, now + 3_600)]),
            token("idle", "reader", 1, &[]),
        ];
        assert_eq!(
            render_tokens(&tokens, now),
            "NAME    USERNAME      SCOPE MAP  SECRET    CREATED               EXPIRES\n\
             ci      robot$ci      team-a     ab12cd34  2024-04-30T12:00:00Z  never\n\
             ci      robot$ci      team-a     ef56gh78  2024-05-01T11:00:00Z  2024-05-01T12:00:00Z (expired)\n\
             deploy  robot$deploy  writer     q1w2e3r4  2024-05-01T11:59:00Z  2024-05-01T13:00:00Z\n\
             idle    robot$idle    reader     -         1970-01-01T00:00:01Z  -\n"
        );
        assert_eq!(render_tokens(&[], now), "NAME  USERNAME  SCOPE MAP  SECRET  CREATED  EXPIRES\n");
    }

    #[test]
    fn keys_table_and_json() {
        let keys = [
            KeyInfo { kid: "kOld12345".into(), created_unix: 951_782_400, signing: false },
            KeyInfo { kid: "kNew67890".into(), created_unix: 1_714_564_800, signing: true },
        ];
        assert_eq!(
            render_keys(&keys),
            "KID        CREATED               SIGNING\n\
             kOld12345  2000-02-29T00:00:00Z  no\n\
             kNew67890  2024-05-01T12:00:00Z  yes\n"
        );
        assert_eq!(render_keys(&[]), "KID  CREATED  SIGNING\n");
        let parsed: Value = serde_json::from_str(&pretty(&keys_json(&keys))).unwrap();
        assert_eq!(
            parsed,
            json!({"keys": [{"kid": "kOld12345", "created_unix": 951_782_400, "signing": false},
                            {"kid": "kNew67890", "created_unix": 1_714_564_800u64, "signing": true}]})
        );
        assert_eq!(
            render_key_rotated(&keys[1]),
            "new signing key kNew67890 created at 2024-05-01T12:00:00Z; it signs new tokens, older keys still verify until retired\n"
        );
    }
}
