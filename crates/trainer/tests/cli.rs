//! Bad input through the real binary: each case prints `error: …` naming the path or value, exits
//! non-zero, and neither panics nor prints a backtrace. Odd but valid images are accepted.

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::{Command, Output};

use anyhow::{ensure, Context};
use image::{ImageBuffer, Rgb, Rgba};

type Result<T> = anyhow::Result<T>;

const BIN: &str = env!("CARGO_BIN_EXE_trainer");

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn trainer<S: AsRef<OsStr>>(args: &[S]) -> Result<Output> {
    Ok(Command::new(BIN)
        .args(args)
        .args(["--quiet", "--threads", "1"])
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()?)
}

/// `args` fails cleanly: non-zero exit, `error:` with every `want`, no panic, no backtrace.
fn fails<S: AsRef<OsStr> + std::fmt::Debug>(args: &[S], want: &[&str]) -> Result<String> {
    let out = trainer(args)?;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(
        !out.status.success(),
        "{args:?} should fail, it exited {:?}; stderr: {err}",
        out.status
    );
    ensure!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{args:?} panicked: {err}"
    );
    ensure!(
        err.contains("error:"),
        "{args:?}: no `error:` line in {err}"
    );
    for w in want {
        ensure!(err.contains(w), "{args:?}: `{w}` missing from {err}");
    }
    Ok(err)
}

fn succeeds<S: AsRef<OsStr> + std::fmt::Debug>(args: &[S]) -> Result<String> {
    let out = trainer(args)?;
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "{args:?} failed: {all}");
    ensure!(!all.contains("panicked"), "{args:?}: {all}");
    Ok(all)
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A teacher run on `data` into `out`, one epoch, with any extra options.
fn teacher_args(data: &str, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "teacher",
        "--data",
        data,
        "--out",
        &s(out),
        "--arch",
        "resnet8",
        "--epochs",
        "1",
        "--warmup-epochs",
        "0",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    v.extend(extra.iter().map(|x| x.to_string()));
    v
}

#[test]
fn missing_or_empty_data_folders_are_named() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("out");
    let missing = dir.path().join("no_such_data");
    fails(
        &teacher_args(&format!("folder:{}", s(&missing)), &out, &[]),
        &["no_such_data", "No such file"],
    )?;
    let empty = dir.path().join("empty_data");
    std::fs::create_dir_all(empty.join("train"))?;
    std::fs::create_dir_all(empty.join("test"))?;
    fails(
        &teacher_args(&format!("folder:{}", s(&empty)), &out, &[]),
        &["empty_data", "no class folders"],
    )?;
    std::fs::create_dir_all(empty.join("train/cat"))?;
    fails(
        &teacher_args(&format!("folder:{}", s(&empty)), &out, &[]),
        &["cat", "no image"],
    )?;
    fails(
        &teacher_args(&format!("cifar10:{}", s(&missing)), &out, &[]),
        &["no_such_data"],
    )?;
    fails(&teacher_args("imagenet:/x", &out, &[]), &["imagenet:/x"])?;
    Ok(())
}

/// A CIFAR-10 binary folder with one record per batch file.
fn cifar_dir(root: &Path) -> Result<()> {
    std::fs::create_dir_all(root)?;
    let mut record = vec![3u8];
    record.extend((0..3072).map(|i| (i % 251) as u8));
    for f in [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ] {
        std::fs::write(root.join(f), &record)?;
    }
    Ok(())
}

#[test]
fn truncated_oversized_and_unreadable_cifar_files_are_named() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("out");
    let data = dir.path().join("cifar");
    let arg = format!("cifar10:{}", s(&data));
    cifar_dir(&data)?;
    let good = std::fs::read(data.join("data_batch_2.bin"))?;
    // The well-formed folder gets past reading (and fails later for its 5 training images).
    fails(&teacher_args(&arg, &out, &[]), &["batch size", "5 images"])?;

    std::fs::write(data.join("data_batch_2.bin"), &good[..good.len() - 1])?;
    fails(
        &teacher_args(&arg, &out, &[]),
        &["data_batch_2.bin", "truncated", "3072 bytes"],
    )?;
    let mut big = good.clone();
    big.push(0);
    std::fs::write(data.join("data_batch_2.bin"), &big)?;
    fails(
        &teacher_args(&arg, &out, &[]),
        &["data_batch_2.bin", "3074 bytes", "1 bytes left over"],
    )?;
    std::fs::write(data.join("data_batch_2.bin"), [])?;
    fails(
        &teacher_args(&arg, &out, &[]),
        &["data_batch_2.bin", "empty file"],
    )?;
    let mut bad_label = good.clone();
    bad_label[0] = 200;
    std::fs::write(data.join("data_batch_2.bin"), &bad_label)?;
    fails(
        &teacher_args(&arg, &out, &[]),
        &["data_batch_2.bin", "label byte 200"],
    )?;
    // Unreadable: a folder where the file should be (permission bits do not stop root).
    std::fs::remove_file(data.join("data_batch_2.bin"))?;
    std::fs::create_dir(data.join("data_batch_2.bin"))?;
    fails(
        &teacher_args(&arg, &out, &[]),
        &["data_batch_2.bin", "Is a directory"],
    )?;
    std::fs::remove_dir(data.join("data_batch_2.bin"))?;
    fails(
        &teacher_args(&arg, &out, &[]),
        &["data_batch_2.bin", "No such file"],
    )?;
    std::fs::write(data.join("data_batch_2.bin"), &good)?;
    fails(
        &teacher_args(&arg, &out, &["--image-size", "64"]),
        &["32x32", "64"],
    )?;
    Ok(())
}

#[test]
fn corrupt_jpeg_and_png_are_named() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("out");
    let sample = trainer::data::bundled_sample_dir();
    let jpeg = std::fs::read(sample.join("train/cat/0000.jpg"))?;
    let mut png = Vec::new();
    ImageBuffer::from_pixel(8, 8, Rgb([1u8, 2, 3]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    for (name, bytes) in [
        ("cut.jpg", &jpeg[..jpeg.len() / 3]),
        ("cut.png", &png[..png.len() / 2]),
        ("text.png", b"not a png at all".as_slice()),
        ("empty.jpeg", b"".as_slice()),
    ] {
        let data = dir.path().join(name.replace('.', "_"));
        for split in ["train", "test"] {
            std::fs::create_dir_all(data.join(split).join("a"))?;
            std::fs::write(data.join(split).join("a/ok.jpg"), &jpeg)?;
        }
        std::fs::write(data.join("train/a").join(name), bytes)?;
        fails(
            &teacher_args(&format!("folder:{}", s(&data)), &out, &[]),
            &[name, "not a readable image"],
        )?;
    }
    Ok(())
}

/// Odd images are accepted and converted; a checkpoint trained on them then serves the checkpoint cases.
#[cfg(unix)]
#[test]
fn odd_images_train_and_bad_checkpoints_are_refused() -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("odd");
    for split in ["train", "test"] {
        for class in ["a", "b"] {
            let d = data.join(split).join(class);
            std::fs::create_dir_all(&d)?;
            std::fs::copy(fixture("palette.png"), d.join("palette.png"))?;
            std::fs::copy(fixture("gray_alpha.png"), d.join("gray_alpha.png"))?;
            ImageBuffer::from_pixel(1, 1, Rgb([200u8, 10, 10])).save(d.join("one.png"))?;
            ImageBuffer::from_pixel(50, 3, Rgba([9u8, 8, 7, 6])).save(d.join("rgba.png"))?;
            image::GrayImage::from_pixel(3, 3, image::Luma([90])).save(d.join("gray.jpg"))?;
            let weird = d.join(OsStr::from_bytes(b"na\xffme.png"));
            ImageBuffer::from_pixel(4, 4, Rgb([0u8, 90, 0])).save(&weird)?;
        }
    }
    let out = dir.path().join("teacher");
    let config = dir.path().join("eval.toml");
    std::fs::write(&config, "[eval]\nlinear_epochs = 2\nknn_k = 3\n")?;
    let mut args = teacher_args(
        &format!("folder:{}", s(&data)),
        &out,
        &["--batch-size", "4"],
    );
    args.extend(["--config".to_string(), s(&config)]);
    succeeds(&args)?;
    let ckpt = out.join("best.safetensors");
    ensure!(ckpt.is_file());

    let eval = |checkpoint: &Path, extra: &[&str]| -> Vec<OsString> {
        let mut v: Vec<OsString> = ["eval", "--data", &format!("folder:{}", s(&data))]
            .iter()
            .map(OsString::from)
            .collect();
        v.extend(["--checkpoint".into(), checkpoint.as_os_str().to_owned()]);
        v.extend(["--config".into(), config.as_os_str().to_owned()]);
        v.extend(extra.iter().map(OsString::from));
        v
    };
    succeeds(&eval(&ckpt, &["--no-linear"]))?;
    // Another architecture: the first missing tensor is named.
    fails(
        &eval(&ckpt, &["--arch", "resnet20"]),
        &[
            "best.safetensors",
            "layer1.1.",
            "resnet20",
            "another architecture",
        ],
    )?;
    // Truncated safetensors, and a file that is not safetensors at all.
    let bytes = std::fs::read(&ckpt)?;
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2])?;
    fails(
        &eval(&cut, &[]),
        &["cut.safetensors", "not a readable safetensors file"],
    )?;
    let text = dir.path().join("notes.safetensors");
    std::fs::write(&text, "these are notes, not tensors")?;
    fails(
        &eval(&text, &[]),
        &["notes.safetensors", "not a readable safetensors file"],
    )?;
    fails(
        &eval(&dir.path().join("nope.safetensors"), &[]),
        &["nope.safetensors", "No such file"],
    )?;
    fails(&eval(dir.path(), &[]), &[&s(dir.path()), "Is a directory"])?;
    // Distillation from a teacher of another architecture.
    let student_out = dir.path().join("student");
    let mut args: Vec<String> = [
        "distill",
        "--data",
        &format!("folder:{}", s(&data)),
        "--out",
        &s(&student_out),
        "--teacher",
        &s(&ckpt),
        "--teacher-arch",
        "resnet32",
        "--epochs",
        "1",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    args.extend(["--config".to_string(), s(&config)]);
    fails(&args, &["best.safetensors", "resnet32"])?;
    Ok(())
}

#[test]
fn config_file_errors_are_named() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("out");
    for (i, (text, want)) in [
        ("[student]\nalfa = 0.1\n", vec!["alfa", "unknown field"]),
        ("seed = \"seven\"\n", vec!["seed", "invalid type"]),
        ("checkpoint_every = -3\n", vec!["checkpoint_every"]),
        ("[student]\nalpha = 2.0\n", vec!["alpha", "2"]),
        (
            "[teacher.optim]\nepochs = 0\n",
            vec!["teacher.optim.epochs", "0"],
        ),
        (
            "[data]\nimage_size = 100000\n",
            vec!["image_size", "100000"],
        ),
        ("this is not toml", vec!["expected"]),
    ]
    .into_iter()
    .enumerate()
    {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text)?;
        let mut w = want.clone();
        let name = format!("bad{i}.toml");
        if i != 3 && i != 4 && i != 5 {
            // Parse errors name the file; validation errors name the key.
            w.push(&name);
        }
        fails(&["teacher", "--config", &s(&path), "--out", &s(&out)], &w)?;
    }
    fails(
        &["teacher", "--config", &s(&dir.path().join("none.toml"))],
        &["none.toml", "No such file"],
    )?;
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let weird = dir.path().join(OsStr::from_bytes(b"c\xffnfig.toml"));
        let args: Vec<OsString> = vec!["teacher".into(), "--config".into(), weird.into()];
        fails(&args, &["c\u{fffd}nfig.toml", "No such file"])?;
    }
    Ok(())
}

#[test]
fn bad_option_values_are_named() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("out");
    let o = s(&out);
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["teacher", "--epochs", "0"], vec!["--epochs", "0"]),
        (vec!["teacher", "--epochs=-1"], vec!["-1", "--epochs"]),
        (vec!["teacher", "--epochs", "-1"], vec!["-1"]),
        (
            vec!["teacher", "--batch-size", "0"],
            vec!["--batch-size", "0"],
        ),
        (
            vec!["distill", "--batch-size=-4"],
            vec!["-4", "--batch-size"],
        ),
        (vec!["teacher", "--lr=-0.1"], vec!["--lr", "-0.1"]),
        (vec!["teacher", "--lr", "0"], vec!["--lr", "0"]),
        (vec!["teacher", "--lr", "nan"], vec!["--lr", "NaN"]),
        (
            vec!["distill", "--alpha", "0", "--batch-size", "1"],
            vec!["batch_size", "1", "NT-Xent"],
        ),
        (
            vec!["teacher", "--method", "simclr", "--batch-size", "1"],
            vec!["teacher.optim.batch_size", "NT-Xent"],
        ),
        (
            vec!["teacher", "--device", "cuda"],
            vec!["--device cuda", "without CUDA"],
        ),
        (vec!["teacher", "--device", "cuda:1"], vec!["cuda:1"]),
        (vec!["teacher", "--device", "tpu"], vec!["tpu"]),
        (vec!["teacher", "--arch", "resnet9000"], vec!["resnet9000"]),
        (
            vec!["teacher", "--image-size", "0"],
            vec!["image_size", "0"],
        ),
        (
            vec!["distill", "--proj-dim", "999999999"],
            vec!["output_dim", "999999999"],
        ),
        (
            vec!["distill", "--alpha", "0.5"],
            vec!["--alpha 0.5", "--teacher"],
        ),
        (
            vec!["teacher", "--train-per-class", "1", "--batch-size", "64"],
            vec!["batch size 64", "10 images"],
        ),
    ];
    for (args, want) in cases {
        let mut a = args.clone();
        a.extend(["--out", &o]);
        fails(&a, &want)?;
    }
    Ok(())
}

#[test]
fn an_output_folder_that_cannot_be_written_is_named() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("a_file");
    std::fs::write(&file, "x")?;
    // Permission bits do not stop root: a folder below a regular file cannot be created by anyone.
    let out = file.join("run");
    fails(
        &["teacher", "--epochs", "1", "--out", &s(&out)],
        &["a_file", "Not a directory"],
    )?;
    fails(
        &["teacher", "--epochs", "1", "--out", &s(&file)],
        &["a_file"],
    )?;
    Ok(())
}

/// Unmounts the tmpfs when the test ends, however it ends.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_disk_that_fills_while_writing_a_checkpoint_keeps_the_last_good_one() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mnt = dir.path().join("small_disk");
    std::fs::create_dir(&mnt)?;
    // 1000 KiB: the first `last.safetensors` of the tiny teacher (~640 KB) fits, the second does not
    // fit beside it (the new file is written in full before it replaces the old one).
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1000k", "tmpfs"])
        .arg(&mnt)
        .output()?;
    if !mounted.status.success() {
        eprintln!(
            "SKIPPED the full-disk check: cannot mount a tmpfs here ({}); it needs root, as in CI",
            String::from_utf8_lossy(&mounted.stderr).trim()
        );
        return Ok(());
    }
    let _guard = Mount(mnt.clone());
    let out = mnt.join("run");
    let err = fails(
        &[
            "teacher",
            "--out",
            &s(&out),
            "--arch",
            "resnet8",
            "--train-per-class",
            "4",
            "--batch-size",
            "8",
            "--epochs",
            "2",
            "--checkpoint-every",
            "1",
        ],
        &["last.safetensors", "No space left on device"],
    )?;
    ensure!(
        !out.join("last.safetensors.tmp").exists(),
        "the partial file is removed: {err}"
    );
    let ck = trainer::checkpoint::Checkpoint::load(
        &out.join("last.safetensors"),
        &candle_core::Device::Cpu,
    )
    .context("the last good checkpoint survives the full disk")?;
    ensure!(ck.meta::<usize>("step") == Some(1), "{:?}", ck.metadata);
    Ok(())
}

#[test]
fn a_non_finite_loss_names_the_step_and_keeps_the_last_good_checkpoint() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("nan");
    let err = fails(
        &[
            "teacher",
            "--out",
            &s(&out),
            "--arch",
            "resnet8",
            "--train-per-class",
            "4",
            "--batch-size",
            "8",
            "--epochs",
            "2",
            "--warmup-epochs",
            "0",
            "--weight-decay",
            "0",
            "--lr",
            "1e30",
            "--checkpoint-every",
            "1",
        ],
        &["teacher: the", "at step", "last good checkpoint is kept"],
    )?;
    if out.join("last.safetensors").exists() {
        let ck = trainer::checkpoint::Checkpoint::load(
            &out.join("last.safetensors"),
            &candle_core::Device::Cpu,
        )?;
        for (name, t) in &ck.tensors {
            let sum = t
                .to_dtype(candle_core::DType::F64)?
                .sum_all()?
                .to_scalar::<f64>()?;
            ensure!(
                sum.is_finite(),
                "{name} is not finite in the kept checkpoint: {err}"
            );
        }
    }
    Ok(())
}

/// The leaves of a TOML table as `a.b.c` → value.
fn leaves(v: &toml::Value, prefix: &str, out: &mut std::collections::BTreeMap<String, String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(v, &key, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

fn keys_of(cfg: &trainer::Config) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    leaves(
        &toml::Value::try_from(cfg).expect("a configuration serialises"),
        "",
        &mut out,
    );
    out
}

/// The configuration a command line resolves to.
fn resolve(args: &[String]) -> Option<trainer::Config> {
    use clap::Parser;
    let cli = trainer::cli::Cli::try_parse_from(args).ok()?;
    Some(match cli.command? {
        trainer::cli::Command::Run(o) | trainer::cli::Command::Smoke(o) => o.config().ok()?,
        trainer::cli::Command::Teacher(o) => o.config().ok()?,
        trainer::cli::Command::Distill(o) => o.config().ok()?,
        trainer::cli::Command::Eval(o) => o.config().ok()?,
        trainer::cli::Command::BenchInfer(o) => o.config().ok()?,
        // `export` and `device-check` take no configuration.
        trainer::cli::Command::Export(_) | trainer::cli::Command::DeviceCheck(_) => return None,
    })
}

/// The option list, the TOML keys and `--help` come from one definition: every key of the
/// configuration is set by a flag of some command, every flag of a command that is not one of its
/// own arguments sets a key, and `--help` shows each flag with its key's documentation.
#[test]
fn every_config_key_is_settable_from_the_command_line() -> Result<()> {
    use clap::CommandFactory;
    // Every key, the optional ones included.
    let mut full = trainer::Config::default();
    full.teacher.from = Some("t.safetensors".into());
    full.student.teacher = Some("t.safetensors".into());
    full.student.teacher_arch = Some("resnet20".into());
    let all: Vec<String> = keys_of(&full).into_keys().collect();
    let own = [
        "config",
        "resume",
        "checkpoint",
        "json",
        "no_linear",
        "run",
        "samples",
        "help",
    ];
    let mut set = std::collections::BTreeSet::new();
    let root = trainer::cli::Cli::command();
    for sub in root.get_subcommands() {
        let name = sub.get_name();
        if name == "export" || name == "device-check" {
            // No configuration: their options are their own (tests/export_cli.rs,
            // tests/device_check.rs).
            continue;
        }
        // `eval` needs its checkpoint.
        let needed: &[&str] = if name == "eval" {
            &["--checkpoint", "c"]
        } else {
            &[]
        };
        let args = |extra: &[&str]| -> Vec<String> {
            ["trainer", name]
                .iter()
                .chain(needed)
                .chain(extra)
                .map(|s| s.to_string())
                .collect()
        };
        let base = keys_of(&resolve(&args(&[])).expect("no flags resolve"));
        let help = sub.clone().render_long_help().to_string();
        for arg in sub.get_arguments() {
            let id = arg.get_id().as_str();
            let Some(long) = arg.get_long() else { continue };
            if own.contains(&id) || (["eval", "bench-infer"].contains(&name) && id == "arch") {
                continue;
            }
            // Without a bundled teacher in the source tree, `run` trains its teacher anyway.
            if id == "train_teacher" && !trainer::checkpoint::bundled_teacher().exists() {
                continue;
            }
            let flag = format!("--{long}");
            assert!(help.contains(&flag), "{name} --help lacks {flag}");
            let doc = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(!doc.is_empty(), "{name} {flag} has no help text");
            let mut candidates: Vec<String> = ["7", "0.25", "true", "false", "x", "3,5"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            candidates.extend(
                arg.get_possible_values()
                    .iter()
                    .map(|v| v.get_name().to_string()),
            );
            // The flag alone (a switch), then with values until one parses and changes something.
            candidates.insert(0, String::new());
            let changed = candidates.iter().find_map(|value| {
                let given: Vec<&str> = if value.is_empty() {
                    vec![&flag]
                } else {
                    vec![&flag, value]
                };
                let cfg = resolve(&args(&given))?;
                let keys = keys_of(&cfg);
                let diff: Vec<String> = all
                    .iter()
                    .filter(|k| keys.get(*k) != base.get(*k))
                    .cloned()
                    .collect();
                (!diff.is_empty()).then_some(diff)
            });
            let changed =
                changed.unwrap_or_else(|| panic!("{name} {flag} sets no configuration key"));
            set.extend(changed);
        }
    }
    let missing: Vec<&String> = all.iter().filter(|k| !set.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "configuration keys no flag sets: {missing:?}"
    );
    Ok(())
}

#[test]
fn absurd_thread_counts_are_refused_at_once() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = Command::new(BIN)
        .args(["teacher", "--quiet", "--threads", "100000", "--out"])
        .arg(dir.path().join("out"))
        .output()?;
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{e}");
    for want in ["threads", "--threads", "100000", "1024"] {
        assert!(e.contains(want), "`{want}` missing from {e}");
    }
    assert!(!e.contains("panicked"), "{e}");
    Ok(())
}
