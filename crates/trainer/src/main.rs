//! The `trainer` binary (the training loops arrive with the trainer issue; for now it loads data).
use anyhow::Result;
use trainer::data::DataSource;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let data: DataSource = match args.iter().position(|a| a == "--data") {
        Some(i) => args.get(i + 1).map(String::as_str).unwrap_or("").parse()?,
        None => DataSource::Sample,
    };
    let t = std::time::Instant::now();
    let split = data.load(32)?;
    println!(
        "loaded {data}: {} train and {} test images of {}x{}, {} classes ({}) in {:.2} s",
        split.train.len(),
        split.test.len(),
        split.train.height,
        split.train.width,
        split.train.num_classes(),
        split.train.class_names.join(", "),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
