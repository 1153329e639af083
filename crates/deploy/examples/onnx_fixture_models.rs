//! Writes the ONNX files of the export tests' cases for `tests/fixtures/gen_onnx.py`, which runs
//! them in onnxruntime: `OUT/{case}.onnx` and `OUT/cases.json` (name, input kind, outputs).
//!
//! `cargo run --release -p deploy --example onnx_fixture_models -- OUT`

use anyhow::{Context, Result};

#[path = "../tests/common/mod.rs"]
mod common;

fn main() -> Result<()> {
    let out = std::env::args()
        .nth(1)
        .context("usage: onnx_fixture_models OUT_DIR")?;
    let out = std::path::PathBuf::from(out);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut list = Vec::new();
    for case in common::cases() {
        let (_, _, bytes) = common::export(&case)?;
        let path = out.join(format!("{}.onnx", case.name));
        std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
        let outputs: Vec<String> = case
            .opts
            .outputs
            .iter()
            .map(|o| format!("\"{}\"", o.name()))
            .collect();
        let torch = match &case.head {
            Some(h) => format!(
                "{{\"layers\": {}, \"batch_norm\": {}, \"hidden\": {}, \"out\": {}}}",
                h.num_layers, h.batch_norm, h.hidden_dim, h.output_dim
            ),
            None => "null".into(),
        };
        list.push(format!(
            "{{\"name\": \"{}\", \"arch\": \"{}\", \"stem\": \"{}\", \"input\": \"{}\", \"outputs\": [{}], \"head\": {torch}}}",
            case.name,
            case.arch,
            format!("{:?}", case.stem).to_lowercase(),
            common::input_name(case.opts.input),
            outputs.join(", ")
        ));
        eprintln!("{} ({} bytes)", path.display(), bytes.len());
    }
    let index = out.join("cases.json");
    std::fs::write(&index, format!("[\n{}\n]\n", list.join(",\n")))
        .with_context(|| format!("writing {}", index.display()))?;
    Ok(())
}
