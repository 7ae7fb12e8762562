//! The Raspberry Pi build, run: the `aarch64-unknown-linux-gnu` `wardlink-edge` under
//! `qemu-aarch64-static`, enrolled with an x86-64 hub; a device publishes over MQTT and a
//! dashboard receives the reading and the alarm it raises.
//!
//! It needs the cross-built binary, so it is ignored by a plain `cargo test`:
//! `deploy/aarch64.sh` (run by `.ci/run`) builds it, checks its size and runs this test with
//! `WARDLINK_AARCH64_EDGE` naming it.

use std::process::Command;

use wardlink_cloud::pki;
use wardlink_shared::{DeviceId, EdgeId, PatientId, WardId};
use wardlink_tests::process::EdgeProcess;
use wardlink_tests::{Dashboard, Device, Hub, is, wait_for_metric};

/// ELF `e_machine` of AArch64.
const EM_AARCH64: u16 = 183;

#[tokio::test]
#[ignore = "needs the cross-built aarch64 edge: run by deploy/aarch64.sh"]
async fn aarch64_edge_under_qemu_raises_an_alarm_on_an_x86_hub() -> anyhow::Result<()> {
    let binary = std::env::var("WARDLINK_AARCH64_EDGE").map_err(|_| {
        anyhow::anyhow!(
            "set WARDLINK_AARCH64_EDGE to the aarch64 wardlink-edge (deploy/aarch64.sh)"
        )
    })?;
    let elf = std::fs::read(&binary)?;
    anyhow::ensure!(
        elf.get(..4) == Some(b"\x7fELF".as_slice())
            && elf.get(18..20) == Some(EM_AARCH64.to_le_bytes().as_slice()),
        "{binary} is not an aarch64 ELF executable"
    );
    anyhow::ensure!(
        cfg!(target_arch = "x86_64"),
        "the hub side of this test is meant to be x86-64"
    );
    let qemu = std::env::var("WARDLINK_QEMU").unwrap_or_else(|_| "qemu-aarch64-static".into());
    let sysroot = std::env::var("WARDLINK_AARCH64_SYSROOT")
        .unwrap_or_else(|_| "/usr/aarch64-linux-gnu".into());

    let hub = Hub::start().await?;
    let dir = tempfile::tempdir()?;
    let edge_toml = pki::enroll(
        &hub.config,
        &EdgeId::new("edge-pi")?,
        &WardId::new("ward-pi")?,
        dir.path(),
    )?;
    // Heart rate above 130/min raises a high alarm at once, so the smoke test needs no delay.
    let mut text = std::fs::read_to_string(&edge_toml)?;
    text.push_str(
        "\n[alarms.hr]\nlow = 40.0\nhigh = 130.0\ndelay_s = 0\nhysteresis = 5.0\n\
         priority = \"high\"\nlow_extreme = 30.0\nhigh_extreme = 200.0\nextreme_confirm_s = 0\n",
    );
    std::fs::write(&edge_toml, text)?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let password = wardlink_edge::broker::add_device(
        &data.join("devices.json"),
        DeviceId::new("mon-pi")?,
        PatientId::new("bed-pi")?,
        16,
    )?;

    let mut program = Command::new(qemu);
    program.arg("-L").arg(sysroot).arg(&binary);
    let edge = EdgeProcess::start_program(
        program,
        &edge_toml,
        &hub.running.quic_addr.to_string(),
        None,
    )
    .await?;
    wait_for_metric(|| edge.metrics(), "wardlink_edge_uplink_connected", 1).await?;

    let mut dash = Dashboard::connect(&hub.ws_url(""), &hub.nurse("ward-pi")).await?;
    let mut device = Device::connect(edge.mqtt, "mon-pi", &password, "bed-pi").await?;
    device.publish(r#"{"hr":72,"spo2":97}"#).await?;
    let vitals = dash.until(|v| is(v, "vitals", "bed-pi")).await?;
    assert_eq!(vitals["values"]["hr"], 72.0);
    assert_eq!(vitals["ward"], "ward-pi");

    device.publish(r#"{"hr":150,"spo2":97}"#).await?;
    let alert = dash.until(|v| is(v, "alert", "bed-pi")).await?;
    assert_eq!(alert["kind"], "hr_high", "{alert}");
    assert_eq!(alert["priority"], "high", "{alert}");
    assert_eq!(alert["state"], "raised", "{alert}");
    Ok(())
}
