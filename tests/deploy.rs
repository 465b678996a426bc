//! The systemd units in deploy/ are valid as systemd reads them (`systemd-analyze verify`),
//! pointed at the binaries of this build. Skips where systemd-analyze is not installed,
//! except in strict mode (CI=true, `just test`).

mod common;

use std::process::Command;

#[test]
fn systemd_units_verify_cleanly() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            !common::strict(),
            "strict mode (CI=true or `just test`): systemd-analyze must be installed"
        );
        eprintln!("SKIPPED: systemd-analyze is not installed");
        return;
    }
    let dir = std::env::temp_dir().join(format!("checksite-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut units = Vec::new();
    for (unit, bin) in [
        (
            "checksite-producer.service",
            env!("CARGO_BIN_EXE_checksite-producer"),
        ),
        (
            "checksite-consumer.service",
            env!("CARGO_BIN_EXE_checksite-consumer"),
        ),
    ] {
        let text = std::fs::read_to_string(format!("deploy/{unit}")).unwrap();
        let name = unit.trim_end_matches(".service");
        assert!(
            text.contains(&format!("ExecStart=/usr/local/bin/{name} ")),
            "{unit} runs /usr/local/bin/{name}"
        );
        for key in [
            "DynamicUser=yes",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "EnvironmentFile=",
            "Restart=on-failure",
        ] {
            assert!(text.contains(key), "{unit} lacks {key}");
        }
        let path = dir.join(unit);
        std::fs::write(&path, text.replace(&format!("/usr/local/bin/{name}"), bin)).unwrap();
        units.push(path);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}
