//! `trainer device-check` on the CPU (what CI can run): every comparison is made, and the CPU
//! against itself differs by exactly nothing (the trainer is deterministic).

use std::process::Command;

use anyhow::Result;
use serde_json::Value;

#[test]
fn the_device_check_on_the_cpu_finds_no_difference() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args([
            "device-check",
            "--device",
            "cpu",
            "--threads",
            "2",
            "--steps",
            "4",
            "--out",
        ])
        .arg(dir.path())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json"))?)?;
    assert_eq!(r["pass"], true);
    let comparisons = r["comparisons"].as_array().expect("comparisons");
    let names: Vec<&str> = comparisons
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default())
        .collect();
    for prefix in [
        "nt_xent/",
        "supcon/",
        "kd_loss/",
        "simclr_distillation/",
        "resnet8/logits",
        "resnet8x4/grad/",
        "resnet20/running_stats/",
        "resnet18/pooled",
        "optimizer/sgd_nesterov/",
        "optimizer/lars/",
        "optimizer/adamw/",
        "training/step_losses",
        "training/accuracies",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(prefix)),
            "no {prefix} in {names:?}"
        );
    }
    for c in comparisons {
        assert_eq!(c["max_abs"], 0.0, "{c}");
    }
    // The short distillation logged a loss at every step, on both devices.
    let steps = r["train_losses_cpu"].as_array().expect("losses").len();
    assert_eq!(steps, 4);
    assert_eq!(r["train_losses_device"], r["train_losses_cpu"]);
    // The table names every comparison.
    assert!(stdout.contains("| training/step_losses |"), "{stdout}");
    Ok(())
}

#[test]
fn an_unknown_device_is_refused_naming_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(["device-check", "--device", "tpu", "--out"])
        .arg(dir.path())
        .output()?;
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("\"tpu\""), "{e}");
    Ok(())
}
