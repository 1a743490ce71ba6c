//! `meridian admin` fails cleanly without a server: no token, nothing listening, and the
//! help text lists the commands. Runs the real binary; no live cluster is needed.

use std::net::TcpListener;
use std::process::{Command, Output};

fn meridian(args: &[&str], token: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meridian"));
    cmd.args(args).env_remove("MERIDIAN_ADMIN_ADDR").env_remove("MERIDIAN_ADMIN_TOKEN");
    if let Some(t) = token {
        cmd.env("MERIDIAN_ADMIN_TOKEN", t);
    }
    cmd.output().expect("running the meridian binary")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A local port with nothing listening on it.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    let port = listener.local_addr().expect("local addr").port();
    drop(listener);
    port
}

#[test]
fn without_a_token_the_command_is_refused() {
    let out = meridian(&["admin", "--addr", &format!("127.0.0.1:{}", closed_port()), "status"], None);
    assert!(!out.status.success());
    assert_eq!(out.status.code(), Some(2), "usage error exit code");
    let err = stderr(&out);
    assert!(err.contains("token"), "stderr: {err}");
    assert!(err.contains("MERIDIAN_ADMIN_TOKEN"), "stderr: {err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn closed_port_cannot_be_reached() {
    let port = closed_port();
    let secret = "do-not-print-this-token";
    for args in [
        vec!["admin", "--addr", &format!("127.0.0.1:{port}")[..], "region", "list"],
        vec!["admin", "status", "--json", "--addr", &format!("http://127.0.0.1:{port}")[..]],
    ] {
        let out = meridian(&args, Some(secret));
        assert_eq!(out.status.code(), Some(1), "args {args:?}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!("cannot reach the admin service at http://127.0.0.1:{port}")),
            "stderr: {err}"
        );
        assert!(!err.contains(secret), "the token leaked: {err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn token_flag_is_accepted_and_not_printed() {
    let port = closed_port();
    let secret = "flag-token-value";
    let out = meridian(&["admin", "--token", secret, "--addr", &format!("127.0.0.1:{port}"), "snapshot"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("cannot reach the admin service"), "stderr: {err}");
    assert!(!err.contains(secret));
}

#[test]
fn help_lists_the_commands() {
    let out = meridian(&["admin", "--help"], Some("env-secret-token"));
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["init", "region", "leader", "snapshot", "status", "--addr", "--token", "--json"] {
        assert!(help.contains(cmd), "{cmd} missing from:\n{help}");
    }
    assert!(!help.contains("env-secret-token"), "help shows the token:\n{help}");

    let out = meridian(&["admin", "region", "--help"], None);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["add", "remove", "list"] {
        assert!(help.contains(cmd), "{cmd} missing from:\n{help}");
    }
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let out = meridian(&["admin", "frobnicate"], Some("t"));
    assert_eq!(out.status.code(), Some(2));
}
