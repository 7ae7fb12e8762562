//! The `wardlink-edge` command line as an operator uses it: real processes.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_wardlink-edge");

const CONFIG: &str = r#"
[edge]
id = "edge-a"
ward = "ward-a"
data_dir = "data"

[mqtt]
max_devices = 2

[hub]
addr = "127.0.0.1:4433"
ca_cert = "ca.pem"
cert = "edge.pem"
key = "edge.key"
"#;

#[test]
fn device_add_prints_the_password_last() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, CONFIG).unwrap();
    let add = |device: &str| {
        Command::new(BIN)
            .args([
                "device",
                "add",
                "--config",
                path.to_str().unwrap(),
                "--device",
                device,
                "--patient",
                "bed-01",
            ])
            .output()
            .unwrap()
    };
    let out = add("mon-1");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let password = stdout.lines().last().unwrap();
    assert_eq!(password.len(), 32);
    let registry = std::fs::read_to_string(dir.path().join("data/devices.json")).unwrap();
    assert!(registry.contains("mon-1") && registry.contains("$argon2id$"));
    assert!(!registry.contains(password), "password stored in clear");

    assert!(add("mon-2").status.success());
    let full = add("mon-3");
    assert!(!full.status.success());
    assert!(String::from_utf8_lossy(&full.stderr).contains("max_devices"));

    let bad = add("mon/4");
    assert!(!bad.status.success());
    let reserved = add("wardlink-ingest");
    assert!(!reserved.status.success());
}

#[test]
fn bad_configuration_exits_64_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.toml");
    let cases = [
        (CONFIG.replace("edge-a", "edge a"), "edge.id"),
        (
            CONFIG.replace("max_devices = 2", "max_devices = \"many\""),
            "mqtt.max_devices",
        ),
        (
            CONFIG.replace("[mqtt]", "[mqtt]\nlisten = \"here\""),
            "mqtt.listen",
        ),
        (format!("{CONFIG}\n[alarms.hr]\nlow = 1"), "alarms.hr"),
    ];
    for (text, key) in cases {
        std::fs::write(&path, &text).unwrap();
        let out = Command::new(BIN)
            .args(["run", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{key}: {out:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("edge.toml") && stderr.contains(key),
            "{key}: {stderr}"
        );
    }
    std::fs::write(&path, CONFIG).unwrap();
    let out = Command::new(BIN)
        .args(["run", "--config", path.to_str().unwrap()])
        .env("WARDLINK_ADMIN_LISTEN", "loopback")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("WARDLINK_ADMIN_LISTEN"));
}
