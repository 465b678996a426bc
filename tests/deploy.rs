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
        // What the README promises of the units, line for line.
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for line in [
            "DynamicUser=yes",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "Restart=on-failure",
            // A configuration error (exit 2) is not restarted for ever.
            "RestartPreventExitStatus=2",
            // No capabilities at all.
            "CapabilityBoundingSet=",
            "LoadCredential=ca.pem:/etc/checksite/ca.pem",
        ] {
            assert!(lines.contains(&line), "{unit} lacks the line {line}");
        }
        assert!(
            lines.iter().any(|l| l.starts_with("EnvironmentFile=")),
            "{unit} reads an environment file"
        );
        if name == "checksite-producer" {
            assert!(
                lines.contains(&"LimitNOFILE=65536"),
                "{unit}: a socket per check"
            );
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
