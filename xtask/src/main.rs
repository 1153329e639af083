//! See <https://github.com/matklad/cargo-xtask/>.
//!
//! `cargo xtask <task>`: the project's automation, in Rust so that it runs wherever cargo does.
//!
//! | task | what it does |
//! | --- | --- |
//! | `ci` | every check, cheapest first: fmt, clippy, docs, tests (with the `hub` and `mpi` features), a trainer smoke run |
//! | `fmt` | formats the workspace |
//! | `lint` | clippy on all targets with warnings denied (with the optional features, and the trainer without them) |
//! | `doc` | API docs with broken intra-doc links (and every other rustdoc warning) denied |
//! | `test` | the whole test suite, release profile |
//! | `smoke` | a tiny trainer run on the bundled sample |
//! | `data [--from DIR] [--out DIR]` | unpacks the CIFAR-10 JPEG tarballs (checked against SHA256SUMS) |
//! | `teacher [--fresh] [--no-bundle]` | trains the CIFAR-10 teacher recipe (resuming an interrupted run), bundles it, evaluates the bundle |
//! | `jpeg-check [--from DIR]` | every CIFAR-10 JPEG decoded by the trainer and by PIL (`PYTHON` with Pillow and numpy): no pixel may differ |
//! | `bench [--runs N] [--threads N] [--no-torch] [FIGURE...]` | the speed figures of issue 7, candle beside PyTorch (`PYTHON` picks the interpreter) |

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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
        "jpeg-check" => jpeg_check(rest),
        "study" => study(rest),
        "teacher" => teacher(rest),
        "bench" => bench(rest),
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
         study   [ARGS] the CIFAR-10 distillation study (writes results/); ARGS go to the study driver, see --help\n  \
         teacher [--fresh] [--no-bundle] the CIFAR-10 teacher recipe (configs/cifar10_teacher.toml) on all 50,000\n          \
         images, resumed if interrupted (target/teacher/cifar10), then bundled into data/teachers/cifar10\n  \
         data    [--from DIR] [--out DIR] unpack the CIFAR-10 JPEG tarballs (default: ../shared/data/cifar10 -> target/data/cifar10)\n  \
         jpeg-check [--from DIR] decode every CIFAR-10 JPEG (default ../shared/data/cifar10) with the trainer\n          \
         and with PIL ($PYTHON, default python3, needs Pillow and numpy): fails if any pixel differs\n  \
         bench   [--runs N] [--threads N] [--no-torch] [FIGURE...] speed figures (crates/trainer/benches),\n          \
         median of N runs (default 5) on N threads (default 2), then the same workloads in PyTorch\n          \
         (crates/trainer/benches/bench_torch.py) when `$PYTHON -c \"import torch, torchvision\"` works\n          \
         (PYTHON defaults to python3), and the ratios; the table also goes to target/bench/latest.md"
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

/// The optional features every check builds with, so that clippy, the docs and the tests cover
/// the code behind them (the Hub and parquet readers, MPI data parallelism) and every step reuses
/// one build of the dependencies. `.ci/run` installs what they need (Open MPI, libclang).
const FEATURES: [&str; 2] = ["--features", "trainer/hub,trainer/mpi"];

/// Clippy with the optional features, then the trainer once more without them (the build a user
/// gets by default; only the trainer crate is checked again).
fn lint() -> Result<()> {
    let mut args = vec!["clippy", "--release", "--workspace", "--all-targets"];
    args.extend(FEATURES);
    args.extend(["--", "-D", "warnings"]);
    cargo(&args)?;
    cargo(&[
        "clippy",
        "--release",
        "-p",
        "trainer",
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
            .args(FEATURES)
            .env("RUSTDOCFLAGS", "-D warnings"),
    )
}

fn test() -> Result<()> {
    let mut args = vec!["test", "--release", "--workspace"];
    args.extend(FEATURES);
    cargo(&args)
}

/// The smoke run of the binary the test step builds (a no-op build after `test`).
fn smoke() -> Result<()> {
    let mut build = vec!["test", "--release", "--workspace", "--no-run"];
    build.extend(FEATURES);
    cargo(&build)?;
    let out = Path::new("target").join("smoke");
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
    }
    let bin = Path::new("target").join("release").join("trainer");
    run(Command::new(&bin).arg("smoke").arg("--out").arg(&out))
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

fn study(args: &[String]) -> Result<()> {
    let mut cmd: Vec<&str> = vec!["run", "--release", "-p", "trainer", "--bin", "study", "--"];
    cmd.extend(args.iter().map(String::as_str));
    cargo(&cmd)
}

/// The teacher recipe: train (resuming), bundle, evaluate the bundle.
fn teacher(args: &[String]) -> Result<()> {
    let (mut fresh, mut bundle) = (false, true);
    for a in args {
        match a.as_str() {
            "--fresh" => fresh = true,
            "--no-bundle" => bundle = false,
            other => bail!("teacher: unknown argument `{other}` (expected --fresh, --no-bundle)"),
        }
    }
    let out = "target/teacher/cifar10";
    if fresh && Path::new(out).exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("removing {out}"))?;
    }
    let data = "cifar10-tar:../shared/data/cifar10";
    let config = "configs/cifar10_teacher.toml";
    let trainer = [
        "run",
        "--release",
        "-p",
        "trainer",
        "--bin",
        "trainer",
        "--",
    ];
    let mut train: Vec<&str> = trainer.to_vec();
    train.extend(["teacher", "--config", config, "--data", data, "--out", out]);
    if Path::new(out).join("last.safetensors").exists() {
        train.push("--resume");
    }
    cargo(&train)?;
    if !bundle {
        return Ok(());
    }
    let dest = "data/teachers/cifar10";
    cargo(&[
        "run",
        "--release",
        "-p",
        "trainer",
        "--example",
        "bundle_teacher",
        "--",
        out,
        dest,
    ])?;
    let mut eval: Vec<&str> = trainer.to_vec();
    eval.extend([
        "eval",
        "--checkpoint",
        "bundled",
        "--config",
        config,
        "--data",
        data,
        "--no-linear",
    ]);
    cargo(&eval)
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

/// PIL's decode of the CIFAR-10 tarballs (`crates/trainer/examples/pil_decode_tarball.py`), then the
/// trainer's, compared pixel for pixel (`crates/trainer/examples/jpeg_vs_pil.rs`).
fn jpeg_check(args: &[String]) -> Result<()> {
    let from = match args {
        [] => "../shared/data/cifar10".to_string(),
        [flag, dir] if flag == "--from" => dir.clone(),
        _ => bail!("jpeg-check: expected no argument or --from DIR"),
    };
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    run(Command::new(&python).args(["-c", "import PIL, numpy"]))
        .with_context(|| format!("jpeg-check needs Pillow and numpy: `{python} -m pip install pillow numpy`, or set PYTHON"))?;
    let out = "target/pil_cifar10";
    run(Command::new(&python).args(["crates/trainer/examples/pil_decode_tarball.py", &from, out]))?;
    cargo(&[
        "run",
        "--release",
        "-p",
        "trainer",
        "--example",
        "jpeg_vs_pil",
        "--",
        &from,
        out,
    ])
}

/// One JSON line of a bench script.
#[derive(Debug, Clone)]
struct BenchFigure {
    figure: String,
    value: f64,
    unit: String,
    peak_rss_mib: Option<f64>,
    start_rss_mib: Option<f64>,
}

/// The value of `key` in a flat one-line JSON object of strings and numbers (all the bench
/// scripts print), without a JSON dependency.
fn json_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pattern = format!("\"{key}\":");
    let rest = line[line.find(&pattern)? + pattern.len()..].trim_start();
    if let Some(s) = rest.strip_prefix('"') {
        return Some(&s[..s.find('"')?]);
    }
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim())
}

fn parse_figure(line: &str) -> Option<BenchFigure> {
    let line = line.trim();
    if !line.starts_with('{') {
        return None;
    }
    Some(BenchFigure {
        figure: json_field(line, "figure")?.to_string(),
        value: json_field(line, "value")?.parse().ok()?,
        unit: json_field(line, "unit")?.to_string(),
        peak_rss_mib: json_field(line, "peak_rss_mib").and_then(|v| v.parse().ok()),
        start_rss_mib: json_field(line, "start_rss_mib").and_then(|v| v.parse().ok()),
    })
}

/// Runs `cmd`, echoing its stdout line by line, and returns the figures it printed.
fn run_bench(cmd: &mut Command) -> Result<Vec<BenchFigure>> {
    eprintln!("$ {cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to start {cmd:?}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut figures = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        figures.extend(parse_figure(&line));
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(figures)
}

fn bench(args: &[String]) -> Result<()> {
    let mut runs = "5".to_string();
    let mut threads = "2".to_string();
    let mut with_torch = true;
    let mut figures: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" | "--threads" => {
                let v = it.next().with_context(|| format!("bench: {a} needs a value"))?;
                match v.parse::<usize>() {
                    Ok(n) if n > 0 => {}
                    _ => bail!("bench: {a} must be a positive integer, got `{v}`"),
                }
                if a == "--runs" {
                    runs = v.clone();
                } else {
                    threads = v.clone();
                }
            }
            "--no-torch" => with_torch = false,
            other if other.starts_with('-') => bail!(
                "bench: unknown argument `{other}` (expected --runs N, --threads N, --no-torch, FIGURE...)"
            ),
            other => figures.push(other.to_string()),
        }
    }
    let mut script_args = vec!["--runs".to_string(), runs.clone()];
    script_args.extend(figures.iter().cloned());

    let ours = run_bench(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["bench", "-p", "trainer", "--bench", "train_bench", "--"])
            .args(&script_args)
            .env("RAYON_NUM_THREADS", &threads),
    )?;

    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let has_torch = with_torch
        && Command::new(&python)
            .args(["-c", "import torch, torchvision"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    let torch = if has_torch {
        let script = Path::new("crates")
            .join("trainer")
            .join("benches")
            .join("bench_torch.py");
        run_bench(
            Command::new(&python)
                .arg(script)
                .args(["--threads", &threads])
                .args(&script_args),
        )?
    } else {
        if with_torch {
            eprintln!(
                "`{python} -c \"import torch, torchvision\"` failed: Rust figures only (set PYTHON to an interpreter with torch and torchvision)"
            );
        }
        Vec::new()
    };

    let table = bench_table(&ours, &torch, &threads, &runs);
    println!("\n{table}");
    let dir = Path::new("target").join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("latest.md");
    std::fs::write(&path, &table).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// The Markdown table of `ours` beside `torch` (ratio > 1: candle is faster).
fn bench_table(ours: &[BenchFigure], torch: &[BenchFigure], threads: &str, runs: &str) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = |f: Option<&BenchFigure>| match f
        .and_then(|f| f.peak_rss_mib.map(|p| (p, f.start_rss_mib)))
    {
        Some((p, Some(s))) => format!("{p:.0} (+{:.0})", p - s),
        Some((p, None)) => format!("{p:.0}"),
        None => "–".into(),
    };
    let mut out = format!(
        "`cargo xtask bench --threads {threads} --runs {runs}` on {cpu}: median of {runs} runs after a warm-up, \
         {threads} threads (RAYON_NUM_THREADS / torch.set_num_threads; the augmentation figure uses 1).\n\
         Ratio > 1: candle is faster (for ms, PyTorch's time over ours). Peak RSS in MiB per workload process, \
         in brackets the growth over the process's resident set before the workload.\n\n\
         | figure | unit | candle | PyTorch | ratio | peak RSS candle | peak RSS PyTorch |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: |\n"
    );
    for ours_fig in ours {
        let theirs = torch.iter().find(|t| t.figure == ours_fig.figure);
        let (torch_value, ratio) = match theirs {
            Some(t) if t.value > 0.0 && ours_fig.value > 0.0 => {
                let ratio = if ours_fig.unit == "ms" {
                    t.value / ours_fig.value
                } else {
                    ours_fig.value / t.value
                };
                (format!("{:.1}", t.value), format!("{ratio:.2}×"))
            }
            _ => ("–".into(), "–".into()),
        };
        out.push_str(&format!(
            "| `{}` | {} | {:.1} | {torch_value} | {ratio} | {} | {} |\n",
            ours_fig.figure,
            ours_fig.unit,
            ours_fig.value,
            mem(Some(ours_fig)),
            mem(theirs)
        ));
    }
    out
}
