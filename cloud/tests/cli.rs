//! The `wardlink-cloud` command line as an operator uses it: real processes.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wardlink_cloud::config::CloudConfig;
use wardlink_cloud::token::Role;

const BIN: &str = env!("CARGO_BIN_EXE_wardlink-cloud");

#[allow(clippy::expect_used)]
fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("wardlink-cloud runs")
}

#[test]
fn init_enroll_token() {
    let dir = tempfile::tempdir().unwrap();
    let hub = dir.path().join("hub");
    let hub_s = hub.to_str().unwrap();
    let out = run(&["init", hub_s]);
    assert!(out.status.success(), "{out:?}");
    // A second init refuses to overwrite the CA.
    let again = run(&["init", hub_s]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));

    let edge = dir.path().join("edge");
    let out = run(&[
        "enroll",
        hub_s,
        "--edge",
        "edge-a",
        "--ward",
        "ward-a",
        "--out",
        edge.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    for f in ["edge.toml", "edge.pem", "edge.key", "ca.pem"] {
        assert!(edge.join(f).exists(), "{f}");
    }

    // The token is alone on stdout and verifies with the hub's key.
    let out = run(&[
        "token", hub_s, "--user", "ann", "--role", "nurse", "--ward", "ward-a", "--ward", "ward-b",
        "--ttl", "2h",
    ]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1);
    let cfg = CloudConfig::load_with_env(&hub.join("cloud.toml"), &Default::default()).unwrap();
    let verifier = wardlink_cloud::token::hub_verifier(&cfg.auth).unwrap();
    let claims = verifier.verify(stdout.trim()).unwrap();
    assert_eq!(claims.sub, "ann");
    assert_eq!(claims.role, Role::Nurse);
    assert_eq!(claims.wards.len(), 2);
    assert!((7190..=7200).contains(&(claims.exp - claims.iat)));

    // A nurse token without a ward is a usage error.
    let out = run(&["token", hub_s, "--user", "ann", "--role", "nurse"]);
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn bad_configuration_exits_64_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let hub = dir.path().join("hub");
    assert!(run(&["init", hub.to_str().unwrap()]).status.success());
    let path = hub.join("cloud.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace(
            "http_listen = \"127.0.0.1:8080\"",
            "http_listen = \"everywhere\"",
        ),
    )
    .unwrap();
    let out = run(&["serve", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cloud.toml") && stderr.contains("hub.http_listen"),
        "{stderr}"
    );

    let out = Command::new(BIN)
        .args([
            "serve",
            "--config",
            hub.join("missing.toml").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));

    // A bad environment override is a configuration error too.
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config", path.to_str().unwrap()])
        .env("WARDLINK_HTTP_LISTEN", "nowhere")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("WARDLINK_HTTP_LISTEN"));
}

#[test]
fn serve_answers_healthz_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let hub = dir.path().join("hub");
    assert!(run(&["init", hub.to_str().unwrap()]).status.success());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--config",
            hub.join("cloud.toml").to_str().unwrap(),
        ])
        .env("WARDLINK_HTTP_LISTEN", format!("127.0.0.1:{port}"))
        .env("WARDLINK_QUIC_LISTEN", "127.0.0.1:0")
        .env("WARDLINK_DATA_DIR", dir.path().join("elsewhere"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let healthy = loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut r = String::new();
            let _ = s.read_to_string(&mut r);
            if r.starts_with("HTTP/1.1 200") {
                break true;
            }
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(healthy, "hub never became healthy");
    assert!(
        dir.path().join("elsewhere").join("hub.redb").exists(),
        "WARDLINK_DATA_DIR honoured"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
