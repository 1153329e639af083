//! Data readers on real files: the bundled sample, mixed ImageFolders, CIFAR binaries, tarballs, bad input.

mod common;

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{GrayImage, ImageBuffer, Rgb, RgbImage, Rgba, RgbaImage};
use trainer::data::{
    bundled_sample_dir, decode_image, load_cifar100_dir, load_cifar10_dir, load_cifar10_tarballs,
    load_image_folder, parse_cifar_records, Cifar100Labels, CifarFormat, DataError, DataSource,
    Dataset,
};

type Result<T> = anyhow::Result<T>;

fn sample() -> Result<trainer::data::Split> {
    Ok(DataSource::Sample.load(32)?)
}

#[test]
fn bundled_sample_loads_balanced() -> Result<()> {
    let split = sample()?;
    assert_eq!((split.train.len(), split.test.len()), (2000, 1000));
    assert_eq!(split.train.num_classes(), 10);
    assert_eq!(split.train.class_names[0], "airplane");
    assert_eq!(split.train.class_names[9], "truck");
    assert_eq!(split.train.class_counts(), vec![200; 10]);
    assert_eq!(split.test.class_counts(), vec![100; 10]);
    assert_eq!(split.train.images.len(), 2000 * 3 * 32 * 32);
    Ok(())
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The JPEG file behind a tensor of `decode_pil.safetensors` (see fixtures/gen_decode.py).
fn decode_fixture_path(name: &str) -> PathBuf {
    match name.strip_prefix("sample/") {
        Some(rel) => bundled_sample_dir().join(rel),
        None => fixtures_dir().join("decode").join(format!("{name}.jpg")),
    }
}

/// `(differing values, max difference)` between two byte buffers of the same length.
fn byte_diff(ours: &[u8], reference: &[u8]) -> (usize, u8) {
    assert_eq!(ours.len(), reference.len());
    ours.iter()
        .zip(reference)
        .filter(|(a, b)| a != b)
        .fold((0, 0), |(n, max), (a, b)| (n + 1, max.max(a.abs_diff(*b))))
}

/// Every JPEG of fixtures/decode (baseline and progressive; 4:2:0, 4:2:2, 4:4:4; quality 5 to 100;
/// restart markers; RGB without the YCbCr transform; grayscale; CMYK with and without an Adobe
/// marker; YCCK; 1x1 and 1x17; stray bytes and corrupt entropy data that libjpeg only warns about)
/// and three bundled-sample JPEGs decode to exactly the pixels of PIL's
/// `Image.open(f).convert("RGB")`, in CHW order: max difference 0 (fixtures/gen_decode.py).
#[test]
fn jpeg_decode_is_pils_bit_for_bit() -> Result<()> {
    let fixture = std::fs::read(fixtures_dir().join("decode_pil.safetensors"))?;
    let st = safetensors::SafeTensors::deserialize(&fixture)?;
    let mut names = st.names();
    names.sort();
    assert!(names.len() >= 25, "fixture holds {} images", names.len());
    let mut failures = Vec::new();
    for name in names {
        let pil = st.tensor(name)?;
        let [3, h, w] = pil.shape()[..] else {
            anyhow::bail!("{name}: shape {:?}", pil.shape());
        };
        let path = decode_fixture_path(name);
        let ours = decode_image(&std::fs::read(&path)?, &path, h, w)?;
        let (n, max) = byte_diff(&ours, pil.data());
        if n > 0 {
            failures.push(format!(
                "{name}: {n} of {} values differ, by up to {max}",
                ours.len()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "not PIL's pixels:\n{}",
        failures.join("\n")
    );
    Ok(())
}

/// The files PIL refuses (truncated, or an entropy-coded error libjpeg stops at) are errors that name
/// the file (fixtures/gen_decode.py checks that PIL raises for each).
#[test]
fn jpeg_files_pil_refuses_are_errors() -> Result<()> {
    let fixture = std::fs::read(fixtures_dir().join("decode_pil.safetensors"))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&fixture)?;
    let refused = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("refused"))
        .expect("fixture metadata lists the refused files")
        .clone();
    assert!(refused.split(',').count() >= 3, "refused: {refused}");
    for name in refused.split(',') {
        let path = decode_fixture_path(name);
        let err = decode_image(&std::fs::read(&path)?, &path, 8, 8)
            .expect_err(&format!("{name} must not decode"))
            .to_string();
        assert!(err.contains(&format!("{name}.jpg")), "{err}");
        if name.starts_with("truncated") {
            assert!(err.contains("truncated"), "{err}");
        }
    }
    Ok(())
}

/// Resizing after the decode is what it was: a JPEG decoded to another size equals the `image`
/// crate's triangle-filter resize of PIL's decode of it (shrinking and enlarging).
#[test]
fn jpeg_resize_applies_to_pils_pixels() -> Result<()> {
    let fixture = std::fs::read(fixtures_dir().join("decode_pil.safetensors"))?;
    let st = safetensors::SafeTensors::deserialize(&fixture)?;
    for (name, h, w) in [
        ("resize_source_97x61", 32, 32),
        ("baseline_420_q75", 40, 70),
    ] {
        let pil = st.tensor(name)?;
        let [3, ph, pw] = pil.shape()[..] else {
            anyhow::bail!("{name}: shape {:?}", pil.shape());
        };
        let plane = ph * pw;
        let hwc: Vec<u8> = (0..plane)
            .flat_map(|i| (0..3).map(move |c| c * plane + i))
            .map(|j| pil.data()[j])
            .collect();
        let pil_img = RgbImage::from_raw(pw as u32, ph as u32, hwc).unwrap();
        let resized = image::imageops::resize(&pil_img, w as u32, h as u32, FilterType::Triangle);
        let expected: Vec<u8> = (0..3)
            .flat_map(|c| resized.pixels().map(move |p| p[c]))
            .collect();
        let path = decode_fixture_path(name);
        let ours = decode_image(&std::fs::read(&path)?, &path, h, w)?;
        assert_eq!(byte_diff(&ours, &expected), (0, 0), "{name} at {h}x{w}");
    }
    Ok(())
}

fn write_png<P: image::Pixel<Subpixel = u8> + image::PixelWithColorType>(
    path: &Path,
    img: &ImageBuffer<P, Vec<u8>>,
) -> Result<()> {
    std::fs::create_dir_all(path.parent().unwrap())?;
    img.save(path)?;
    Ok(())
}

fn mixed_folder(root: &Path) -> Result<()> {
    // class "a": an RGB PNG of another size, and a grayscale PNG.
    let rgb: RgbImage = ImageBuffer::from_fn(40, 20, |x, y| Rgb([x as u8 * 5, y as u8 * 10, 200]));
    write_png(&root.join("a/wide.png"), &rgb)?;
    let gray: GrayImage = ImageBuffer::from_pixel(8, 8, image::Luma([77]));
    write_png(&root.join("a/gray.PNG"), &gray)?;
    // class "b": an RGBA PNG at the target size, a 1x1 JPEG, and a file that is skipped.
    let rgba: RgbaImage = ImageBuffer::from_pixel(16, 16, Rgba([10, 20, 30, 0]));
    write_png(&root.join("b/alpha.png"), &rgba)?;
    let one: RgbImage = ImageBuffer::from_pixel(1, 1, Rgb([250, 0, 0]));
    one.save_with_format(root.join("b/tiny.jpeg"), image::ImageFormat::Jpeg)?;
    std::fs::write(
        root.join("b/notes.txt"),
        "not an image, skipped by extension",
    )?;
    std::fs::write(root.join(".hidden"), "skipped")?;
    Ok(())
}

#[test]
fn image_folder_mixed_sizes_gray_alpha_png() -> Result<()> {
    let dir = tempfile::tempdir()?;
    mixed_folder(dir.path())?;
    let ds = load_image_folder(dir.path(), 16, 16)?;
    assert_eq!(ds.class_names, vec!["a", "b"]);
    // Sorted file names within a class: gray.PNG < wide.png; alpha.png < tiny.jpeg.
    assert_eq!(ds.labels, vec![0, 0, 1, 1]);
    assert_eq!(
        (ds.height, ds.width, ds.images.len()),
        (16, 16, 4 * 3 * 16 * 16)
    );
    let gray = ds.image(0).unwrap();
    assert!(
        gray.iter().all(|&v| v == 77),
        "grayscale must become R = G = B"
    );
    let alpha = ds.image(2).unwrap();
    let plane = 16 * 16;
    assert!(
        alpha[..plane].iter().all(|&v| v == 10) && alpha[plane..2 * plane].iter().all(|&v| v == 20)
    );
    assert!(
        alpha[2 * plane..].iter().all(|&v| v == 30),
        "alpha is dropped, colour kept"
    );
    let wide = ds.image(1).unwrap();
    assert!(
        wide[2 * plane..].iter().all(|&v| v == 200),
        "constant blue plane survives the resize"
    );
    assert!(
        wide[plane] < wide[plane + plane - 1],
        "green grows downwards"
    );
    let tiny = ds.image(3).unwrap();
    assert!(
        tiny[..plane].iter().all(|&v| v > 200) && tiny[plane..].iter().all(|&v| v < 60),
        "1x1 red upsized"
    );
    Ok(())
}

fn err_text(e: DataError) -> String {
    e.to_string()
}

#[test]
fn image_folder_bad_inputs_name_the_path() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("nope");
    let e = err_text(load_image_folder(&missing, 32, 32).unwrap_err());
    assert!(e.contains("nope") && e.contains("No such file"), "{e}");

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty)?;
    let e = err_text(load_image_folder(&empty, 32, 32).unwrap_err());
    assert!(e.contains("empty") && e.contains("no class folders"), "{e}");

    let no_images = dir.path().join("noimg");
    std::fs::create_dir_all(no_images.join("cls"))?;
    std::fs::write(no_images.join("cls/readme.txt"), "x")?;
    let e = err_text(load_image_folder(&no_images, 32, 32).unwrap_err());
    assert!(e.contains("cls") && e.contains("no image"), "{e}");

    let not_image = dir.path().join("notimg");
    std::fs::create_dir_all(not_image.join("cls"))?;
    std::fs::write(not_image.join("cls/fake.jpg"), "this is text, not a JPEG")?;
    let e = err_text(load_image_folder(&not_image, 32, 32).unwrap_err());
    assert!(
        e.contains("fake.jpg") && e.contains("not a readable image"),
        "{e}"
    );

    let corrupt = dir.path().join("corrupt");
    std::fs::create_dir_all(corrupt.join("cls"))?;
    let good = std::fs::read(bundled_sample_dir().join("train/cat/0000.jpg"))?;
    std::fs::write(corrupt.join("cls/cut.jpg"), &good[..good.len() / 3])?;
    let e = err_text(load_image_folder(&corrupt, 32, 32).unwrap_err());
    assert!(
        e.contains("cut.jpg") && e.contains("not a readable image"),
        "{e}"
    );

    let a_file = dir.path().join("file.txt");
    std::fs::write(&a_file, "x")?;
    let e = err_text(load_image_folder(&a_file, 32, 32).unwrap_err());
    assert!(e.contains("file.txt") && e.contains("not a folder"), "{e}");
    Ok(())
}

#[cfg(unix)]
#[test]
fn non_utf8_file_names_are_read() -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir()?;
    let cls = dir.path().join(std::ffi::OsStr::from_bytes(b"cl\xffass"));
    std::fs::create_dir_all(&cls)?;
    let good = std::fs::read(bundled_sample_dir().join("train/cat/0000.jpg"))?;
    std::fs::write(cls.join(std::ffi::OsStr::from_bytes(b"im\xfeg.jpg")), &good)?;
    let ds = load_image_folder(dir.path(), 32, 32)?;
    assert_eq!(ds.len(), 1);
    assert_eq!(ds.class_names, vec!["cl\u{fffd}ass"]);
    Ok(())
}

/// Writes `ds` as CIFAR records with `label_bytes` label bytes each (the fine label last).
fn to_records(ds: &Dataset, label_bytes: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..ds.len() {
        for _ in 0..label_bytes {
            out.push(ds.labels[i] as u8);
        }
        out.extend_from_slice(ds.image(i).unwrap());
    }
    out
}

fn cifar10_dir(split: &trainer::data::Split) -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    let parts = split.train.len() / 5;
    for b in 0..5 {
        let idx: Vec<usize> = (b * parts..(b + 1) * parts).collect();
        std::fs::write(
            dir.path().join(format!("data_batch_{}.bin", b + 1)),
            to_records(&split.train.select(&idx), 1),
        )?;
    }
    std::fs::write(
        dir.path().join("test_batch.bin"),
        to_records(&split.test, 1),
    )?;
    Ok(dir)
}

#[test]
fn cifar10_binary_round_trip() -> Result<()> {
    let split = sample()?;
    let dir = cifar10_dir(&split)?;
    let read = load_cifar10_dir(dir.path())?;
    assert_eq!(
        read, split,
        "pixels, labels and class names survive the binary format"
    );
    Ok(())
}

#[test]
fn cifar100_binary_fine_and_coarse() -> Result<()> {
    let split = sample()?;
    let dir = tempfile::tempdir()?;
    // Fine label = the CIFAR-10 label, coarse label = label / 5.
    let records = |ds: &Dataset| {
        let mut out = Vec::new();
        for i in 0..ds.len() {
            out.push((ds.labels[i] / 5) as u8);
            out.push(ds.labels[i] as u8);
            out.extend_from_slice(ds.image(i).unwrap());
        }
        out
    };
    std::fs::write(dir.path().join("train.bin"), records(&split.train))?;
    std::fs::write(dir.path().join("test.bin"), records(&split.test))?;
    let fine = load_cifar100_dir(dir.path(), Cifar100Labels::Fine)?;
    assert_eq!(fine.train.labels, split.train.labels);
    assert_eq!(fine.train.images, split.train.images);
    assert_eq!(fine.train.num_classes(), 100);
    let coarse = load_cifar100_dir(dir.path(), Cifar100Labels::Coarse)?;
    assert_eq!(
        coarse.test.labels,
        split.test.labels.iter().map(|l| l / 5).collect::<Vec<_>>()
    );
    assert_eq!(coarse.test.num_classes(), 20);
    Ok(())
}

#[test]
fn cifar_bad_inputs_name_the_file() -> Result<()> {
    let split = sample()?;
    let dir = cifar10_dir(&split)?;
    // Truncated batch: size not a multiple of the record.
    let path = dir.path().join("data_batch_3.bin");
    let bytes = std::fs::read(&path)?;
    std::fs::write(&path, &bytes[..bytes.len() - 100])?;
    let e = load_cifar10_dir(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("data_batch_3.bin") && e.contains("not a multiple of the 3073-byte record"),
        "{e}"
    );
    std::fs::write(&path, &bytes)?;
    // Label byte out of range.
    let mut bad = bytes.clone();
    bad[3073 * 7] = 10;
    std::fs::write(&path, &bad)?;
    let e = load_cifar10_dir(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("data_batch_3.bin")
            && e.contains("record 7: label byte 10 is out of range 0..10"),
        "{e}"
    );
    // Missing file.
    std::fs::remove_file(&path)?;
    let e = load_cifar10_dir(dir.path()).unwrap_err().to_string();
    assert!(e.contains("data_batch_3.bin"), "{e}");
    // Empty file, missing folder.
    let p = Path::new("x.bin");
    assert!(parse_cifar_records(&[], p, CifarFormat::Cifar10)
        .unwrap_err()
        .to_string()
        .contains("empty"));
    let e = load_cifar10_dir(dir.path().join("absent"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("absent"), "{e}");
    // CIFAR-100 fine label out of range.
    let mut rec = vec![0u8; 3074];
    rec[1] = 100;
    let e = parse_cifar_records(&rec, p, CifarFormat::Cifar100(Cifar100Labels::Fine))
        .unwrap_err()
        .to_string();
    assert!(e.contains("label byte 100 is out of range 0..100"), "{e}");
    Ok(())
}

#[test]
fn cifar10_tarballs_equal_the_folders() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root: PathBuf = bundled_sample_dir();
    common::tar_gz(&dir.path().join("train.tar.gz"), "train", &root)?;
    common::tar_gz(&dir.path().join("test.tar.gz"), "test", &root)?;
    let from_tar = load_cifar10_tarballs(dir.path(), 32, 32)?;
    assert_eq!(from_tar, sample()?);
    let e = load_cifar10_tarballs(dir.path().join("none"), 32, 32)
        .unwrap_err()
        .to_string();
    assert!(e.contains("train.tar.gz"), "{e}");
    Ok(())
}

#[test]
fn data_source_strings() -> Result<()> {
    assert_eq!("sample".parse::<DataSource>()?, DataSource::Sample);
    assert_eq!(
        "folder:/x".parse::<DataSource>()?,
        DataSource::Folder("/x".into())
    );
    assert_eq!(
        "cifar100:d".parse::<DataSource>()?.to_string(),
        "cifar100:d"
    );
    let e = "imagenet:/x".parse::<DataSource>().unwrap_err().to_string();
    assert!(
        e.contains("imagenet:/x") && e.contains("cifar10:DIR"),
        "{e}"
    );
    assert!("cifar10:".parse::<DataSource>().is_err());
    let e = DataSource::Cifar10("d".into())
        .load(64)
        .unwrap_err()
        .to_string();
    assert!(e.contains("d"), "{e}");
    Ok(())
}
