//! See <https://github.com/matklad/cargo-xtask/>.
//!
//! `cargo xtask <task>`: the project's automation, in Rust so that it runs wherever cargo does.
//!
//! | task | what it does |
//! | --- | --- |
//! | `ci` | every check, cheapest first: fmt, clippy, docs, tests, a trainer smoke run |
//! | `fmt` | formats the workspace |
//! | `lint` | clippy on all targets with warnings denied |
//! | `doc` | API docs with broken intra-doc links (and every other rustdoc warning) denied |
//! | `test` | the whole test suite, release profile |
//! | `smoke` | a tiny trainer run on the bundled sample |
//! | `data [--from DIR] [--out DIR]` | unpacks the CIFAR-10 JPEG tarballs (checked against SHA256SUMS) |

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(task) = args.first() else {
        print_help();
        bail!("no task given");
    };
    let rest = &args[1..];
    let root = project_root();
    std::env::set_current_dir(&root).with_context(|| format!("cd {}", root.display()))?;
    match task.as_str() {
        "ci" => ci(),
        "fmt" => cargo(&["fmt", "--all"]),
        "lint" => lint(),
        "doc" => doc(),
        "test" => test(),
        "smoke" => smoke(),
        "data" => data(rest),
        "help" | "--help" | "-h" => {
            print_help();
            Ok(())
        }
        other => {
            print_help();
            bail!("unknown task `{other}`")
        }
    }
}

fn print_help() {
    eprintln!(
        "usage: cargo xtask <task>\n\n\
         tasks:\n  \
         ci      fmt check, clippy, docs, tests, trainer smoke run (what CI runs)\n  \
         fmt     format the workspace\n  \
         lint    clippy --all-targets with -D warnings\n  \
         doc     cargo doc with warnings denied\n  \
         test    the test suite (release profile)\n  \
         smoke   a tiny trainer run on the bundled sample\n  \
         data    [--from DIR] [--out DIR] unpack the CIFAR-10 JPEG tarballs (default: ../shared/data/cifar10 -> target/data/cifar10)"
    );
}

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("failed to start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn cargo(args: &[&str]) -> Result<()> {
    run(Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())).args(args))
}

fn lint() -> Result<()> {
    cargo(&[
        "clippy",
        "--release",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])
}

fn doc() -> Result<()> {
    run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["doc", "--release", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )
}

fn test() -> Result<()> {
    cargo(&["test", "--release", "--workspace"])
}

fn smoke() -> Result<()> {
    let out = Path::new("target").join("smoke");
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
    }
    let out = out.to_string_lossy().into_owned();
    cargo(&[
        "run",
        "--release",
        "-p",
        "trainer",
        "--",
        "smoke",
        "--out",
        &out,
    ])
}

fn ci() -> Result<()> {
    let start = Instant::now();
    type Step = fn() -> Result<()>;
    let steps: [(&str, Step); 5] = [
        ("fmt", || cargo(&["fmt", "--all", "--", "--check"])),
        ("clippy", lint),
        ("doc", doc),
        ("test", test),
        ("smoke", smoke),
    ];
    for (name, step) in steps {
        let t = Instant::now();
        eprintln!("== ci: {name}");
        step().with_context(|| format!("ci step `{name}`"))?;
        eprintln!("== ci: {name} ok in {:.0} s", t.elapsed().as_secs_f64());
    }
    eprintln!(
        "== ci: all checks passed in {:.0} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn data(args: &[String]) -> Result<()> {
    let mut from = PathBuf::from("../shared/data/cifar10");
    let mut out = PathBuf::from("target/data/cifar10");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value = it
            .next()
            .with_context(|| format!("data: {a} needs a value"));
        match a.as_str() {
            "--from" => from = PathBuf::from(value?),
            "--out" => out = PathBuf::from(value?),
            other => bail!("data: unknown argument `{other}` (expected --from DIR, --out DIR)"),
        }
    }
    let marker = out.join(".complete");
    if marker.exists() {
        eprintln!("{} is ready (remove it to unpack again)", out.display());
        return Ok(());
    }
    for f in ["train.tar.gz", "test.tar.gz"] {
        if !from.join(f).is_file() {
            bail!(
                "{}: missing; pass --from DIR with CIFAR-10's train.tar.gz and test.tar.gz",
                from.join(f).display()
            );
        }
    }
    if from.join("SHA256SUMS").is_file() {
        run(Command::new("sha256sum")
            .args(["--check", "--quiet", "SHA256SUMS"])
            .current_dir(&from))
        .context("checksums of the CIFAR-10 tarballs")?;
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    for f in ["train.tar.gz", "test.tar.gz"] {
        run(Command::new("tar")
            .arg("xzf")
            .arg(from.join(f))
            .arg("-C")
            .arg(&out))?;
    }
    std::fs::write(&marker, b"").with_context(|| format!("writing {}", marker.display()))?;
    eprintln!(
        "unpacked CIFAR-10 to {}: use `--data folder:{}`",
        out.display(),
        out.display()
    );
    Ok(())
}
