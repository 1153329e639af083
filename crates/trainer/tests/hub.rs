//! Datasets from the Hugging Face Hub and parquet shards (`--features hub`), all offline: a fake
//! Hub cache laid out by huggingface_hub's own functions, shards written by `datasets` and pyarrow
//! (fixtures/gen_hub.py), a fake Hub on loopback for the download path, and what `datasets` and
//! PIL read from the same files (`hub_expected.safetensors`). Without the feature, only the
//! refusal of `hub:` and `parquet:` is tested.

#[cfg(not(feature = "hub"))]
#[test]
fn hub_and_parquet_need_their_features() {
    use trainer::data::DataSource;
    for (data, feature) in [("hub:a/b", "hub"), ("parquet:/x", "parquet")] {
        let e = data.parse::<DataSource>().unwrap_err().to_string();
        assert!(e.contains(&format!("--features {feature}")), "{e}");
    }
}

#[cfg(feature = "hub")]
mod with_hub {
    use std::collections::BTreeMap;
    use std::ffi::OsStr;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use anyhow::{bail, ensure, Context};
    use safetensors::SafeTensors;
    use trainer::data::hub::{load_hub, HubDataset, HubOptions};
    use trainer::data::parquet::{choose_splits, load_parquet_dir, shard_config_split};
    use trainer::data::{decode_image, DataSource, Dataset, Split};

    type Result<T> = anyhow::Result<T>;

    const SIZE: usize = 8;
    const TINY_CIFAR_COMMIT: &str = "ea55b8e57b5f559e6db35749d4c3378ec443af94";

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    fn fixture_cache() -> PathBuf {
        fixtures().join("hf_home/hub")
    }

    fn offline(cache_dir: PathBuf) -> HubOptions {
        HubOptions {
            cache_dir,
            offline: true,
            endpoint: None,
            token: None,
            progress: false,
        }
    }

    fn hub(spec: &str) -> Result<Split> {
        Ok(load_hub(&spec.parse()?, SIZE, &offline(fixture_cache()))?)
    }

    fn hub_err(spec: &str) -> String {
        match hub(spec) {
            Ok(_) => panic!("{spec} should fail"),
            Err(e) => e.to_string(),
        }
    }

    /// What `datasets` and PIL read from the fixtures.
    struct Expected {
        bytes: Vec<u8>,
    }

    impl Expected {
        fn load() -> Result<Self> {
            Ok(Expected {
                bytes: std::fs::read(fixtures().join("hub_expected.safetensors"))?,
            })
        }

        fn st(&self) -> Result<SafeTensors<'_>> {
            Ok(SafeTensors::deserialize(&self.bytes)?)
        }

        fn class_names(&self, dataset: &str) -> Result<Vec<String>> {
            let (_, meta) = SafeTensors::read_metadata(&self.bytes)?;
            let json = meta
                .metadata()
                .as_ref()
                .and_then(|m| m.get("class_names"))
                .context("class_names metadata")?;
            let all: BTreeMap<String, Vec<String>> = serde_json::from_str(json)?;
            all.get(dataset).cloned().context("dataset in class_names")
        }

        fn labels(&self, key: &str) -> Result<Vec<u32>> {
            let st = self.st()?;
            let t = st.tensor(&format!("{key}.labels"))?;
            Ok(t.data()
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
                .collect())
        }

        fn pil(&self, key: &str) -> Result<Vec<u8>> {
            Ok(self.st()?.tensor(&format!("{key}.pil"))?.data().to_vec())
        }

        fn encoded(&self, key: &str, i: usize) -> Result<Vec<u8>> {
            Ok(self
                .st()?
                .tensor(&format!("{key}.bytes.{i}"))?
                .data()
                .to_vec())
        }
    }

    /// `ds` holds, in order, the images and labels `datasets` reads for `key`: each image exactly
    /// as `decode_image` decodes its encoded bytes, and PIL's decode (exactly, for images of the
    /// target size).
    fn check_split(ds: &Dataset, expected: &Expected, key: &str) -> Result<()> {
        let labels = expected.labels(key)?;
        ensure!(
            ds.labels == labels,
            "{key}: labels {:?} vs datasets' {labels:?}",
            ds.labels
        );
        ensure!((ds.height, ds.width) == (SIZE, SIZE), "{key}: size");
        let pil = expected.pil(key)?;
        let n = 3 * SIZE * SIZE;
        ensure!(
            pil.len() == ds.len() * n,
            "{key}: {} images vs PIL's {}",
            ds.len(),
            pil.len() / n
        );
        for i in 0..ds.len() {
            let ours = ds.image(i).context("image")?;
            let encoded = expected.encoded(key, i)?;
            let direct = decode_image(&encoded, Path::new(key), SIZE, SIZE)?;
            ensure!(
                ours == direct.as_slice(),
                "{key} row {i}: not the row's own bytes"
            );
            let reference = &pil[i * n..(i + 1) * n];
            let max = ours
                .iter()
                .zip(reference)
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap_or(0);
            let native = image::load_from_memory(&encoded)?;
            let resized = (native.width(), native.height()) != (SIZE as u32, SIZE as u32);
            // JPEG and PNG decode to PIL's pixels exactly; only a resize may differ (the triangle
            // filter and PIL's bilinear, by a level or two).
            let tolerance = if resized { 2 } else { 0 };
            ensure!(
                max <= tolerance,
                "{key} row {i}: max diff {max} from PIL (tolerance {tolerance})"
            );
        }
        Ok(())
    }

    #[test]
    fn hub_cache_offline_reads_what_datasets_reads() -> Result<()> {
        let expected = Expected::load()?;
        let split = hub("simclr-distill/tiny-cifar")?;
        let names = expected.class_names("tiny-cifar")?;
        assert_eq!(names, ["airplane", "cat", "truck"]);
        assert_eq!(split.train.class_names, names);
        assert_eq!(split.test.class_names, names);
        // Two train shards (0000, 0001) in order, several row groups each.
        assert_eq!((split.train.len(), split.test.len()), (8, 3));
        check_split(&split.train, &expected, "tiny-cifar.plain_text.train")?;
        check_split(&split.test, &expected, "tiny-cifar.plain_text.test")?;
        // The same with the revision and the config named, by commit hash and by ref.
        let pinned = hub(&format!(
            "simclr-distill/tiny-cifar@{TINY_CIFAR_COMMIT}:plain_text"
        ))?;
        assert_eq!(pinned, split);
        assert_eq!(
            hub("simclr-distill/tiny-cifar@refs/convert/parquet")?,
            split
        );
        // The grayscale PNG (train row 1) is R = G = B.
        let gray = split.train.image(1).context("row 1")?;
        let plane = SIZE * SIZE;
        assert!(gray[..plane] == gray[plane..2 * plane] && gray[..plane] == gray[2 * plane..]);
        Ok(())
    }

    #[test]
    fn validation_stands_in_for_a_missing_test_split_and_configs_are_chosen() -> Result<()> {
        let expected = Expected::load()?;
        // Two configs, `default` and `other`: `default` is read unless another is named.
        let split = hub("simclr-distill/tiny-val")?;
        check_split(&split.train, &expected, "tiny-val.default.train")?;
        check_split(&split.test, &expected, "tiny-val.default.validation")?;
        assert_eq!(split.train.class_names, expected.class_names("tiny-val")?);
        let other = hub("simclr-distill/tiny-val:other")?;
        check_split(&other.train, &expected, "tiny-val.other.train")?;
        check_split(&other.test, &expected, "tiny-val.other.test")?;
        Ok(())
    }

    #[test]
    fn hub_errors_name_the_dataset_split_and_what_was_found() -> Result<()> {
        let e = hub_err("simclr-distill/no-test");
        assert!(
            e.contains("hub:simclr-distill/no-test")
                && e.contains("config `default` has the splits `train`")
                && e.contains("`test` (or `validation`, `valid`)"),
            "{e}"
        );
        let e = hub_err("simclr-distill/tiny-val:nope");
        assert!(
            e.contains("tiny-val:nope")
                && e.contains("no config `nope`")
                && e.contains("`default`, `other`"),
            "{e}"
        );
        let e = hub_err("simclr-distill/not-downloaded");
        assert!(
            e.contains("hub:simclr-distill/not-downloaded")
                && e.contains("HF_HUB_OFFLINE")
                && e.contains("datasets--simclr-distill--not-downloaded/refs/refs/convert/parquet"),
            "{e}"
        );
        let e = hub_err("simclr-distill/tiny-cifar@main");
        assert!(e.contains("no revision `main`"), "{e}");
        for bad in ["nameonly", "a/b/c", "a/b@", "a/b:", "/b", "a b/c"] {
            let e = bad.parse::<HubDataset>().unwrap_err().to_string();
            assert!(
                e.contains(&format!("hub:{bad}")) && e.contains("OWNER/NAME"),
                "{e}"
            );
        }
        Ok(())
    }

    #[test]
    fn shard_names_map_to_configs_and_splits() -> Result<()> {
        let cases = [
            (
                "plain_text/train/0000.parquet",
                Some(("plain_text", "train")),
            ),
            (
                "default/partial-train/0012.parquet",
                Some(("default", "train")),
            ),
            ("data/test-00000-of-00002.parquet", Some(("data", "test"))),
            ("validation.parquet", Some(("", "validation"))),
            ("train/0001.parquet", Some(("", "train"))),
            ("README.md", None),
            (".gitattributes", None),
        ];
        for (name, want) in cases {
            let got = shard_config_split(name);
            let want = want.map(|(c, s)| (c.to_string(), s.to_string()));
            assert_eq!(got, want, "{name}");
        }
        let names: Vec<String> = [
            "a/train/0000.parquet",
            "b/train/0000.parquet",
            "b/test/0000.parquet",
        ]
        .map(String::from)
        .to_vec();
        let hint = |c: &str| format!("x:{c}");
        let e = choose_splits("x", &names, None, &hint)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("several configs (`a`, `b`)") && e.contains("x:a"),
            "{e}"
        );
        let b = choose_splits("x", &names, Some("b"), &hint)?;
        assert_eq!(
            (b.train.len(), b.test_split.as_str(), b.test.len()),
            (1, "test", 1)
        );
        Ok(())
    }

    #[test]
    fn parquet_folders_without_metadata_in_any_codec() -> Result<()> {
        let expected = Expected::load()?;
        let dir = fixtures().join("plain");
        // Parsed from --data, as the trainer does.
        let split = format!("parquet:{}", dir.display())
            .parse::<DataSource>()?
            .load(SIZE)?;
        assert_eq!(split.train.labels, expected.labels("plain.train")?);
        assert_eq!(split.test.labels, expected.labels("plain.test")?);
        assert_eq!(split.train.images, expected.pil("plain.train")?);
        assert_eq!(split.test.images, expected.pil("plain.test")?);
        // No ClassLabel names: 0 ..= the largest label.
        assert_eq!(split.train.class_names, ["0", "1", "2", "3"]);
        // A cache snapshot is a parquet folder too (of symbolic links).
        let snapshot = fixture_cache()
            .join("datasets--simclr-distill--tiny-cifar/snapshots")
            .join(TINY_CIFAR_COMMIT);
        assert_eq!(
            load_parquet_dir(&snapshot, SIZE)?,
            hub("simclr-distill/tiny-cifar")?
        );
        let e = load_parquet_dir(&snapshot.join("plain_text/train/0000.parquet"), SIZE)
            .unwrap_err()
            .to_string();
        assert!(e.contains("0000.parquet: not a folder"), "{e}");
        Ok(())
    }

    #[test]
    fn bad_cells_name_the_shard_row_and_column() -> Result<()> {
        let bad = fixtures().join("bad_parquet");
        let err = |name: &str| {
            load_parquet_dir(&bad.join(name), SIZE)
                .unwrap_err()
                .to_string()
        };
        let e = err("image");
        assert!(
            e.contains("split train, train/0000.parquet, row 1, column `image`")
                && e.contains("not a readable image"),
            "{e}"
        );
        let e = err("unlabelled");
        assert!(
            e.contains("split test, test/0000.parquet: row 0, column `label`: label -1"),
            "{e}"
        );
        let e = err("label");
        assert!(
            e.contains(
                "train/0000.parquet: row 1, column `label`: label 5 is not below the 2 class names"
            ),
            "{e}"
        );
        // A truncated shard, and a folder without parquet files.
        let dir = tempfile::tempdir()?;
        for split in ["train", "test"] {
            let src = fixtures().join("plain").join(format!(
                "{split}-00000-of-0000{}.parquet",
                if split == "train" { 2 } else { 1 }
            ));
            std::fs::copy(&src, dir.path().join(format!("{split}.parquet")))?;
        }
        let test = dir.path().join("test.parquet");
        let bytes = std::fs::read(&test)?;
        std::fs::write(&test, &bytes[..bytes.len() / 2])?;
        let e = load_parquet_dir(dir.path(), SIZE).unwrap_err().to_string();
        assert!(
            e.contains("split test, test.parquet: not a readable parquet file"),
            "{e}"
        );
        let empty = tempfile::tempdir()?;
        let e = load_parquet_dir(empty.path(), SIZE)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no .parquet file found"), "{e}");
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // The binary, its environment (HF_HOME, HF_HUB_OFFLINE, HF_ENDPOINT), and a fake Hub.

    const BIN: &str = env!("CARGO_BIN_EXE_trainer");

    /// A one-epoch teacher run on `data` in a child process whose Hugging Face environment is
    /// exactly `env` (proxies removed: ureq would send loopback requests to a proxy).
    fn teacher(data: &str, out: &Path, env: &[(&str, &OsStr)]) -> Result<Output> {
        let config = out.with_extension("toml");
        std::fs::write(&config, "[eval]\nlinear_epochs = 1\nknn_k = 3\n")?;
        let mut cmd = Command::new(BIN);
        cmd.args(["teacher", "--data", data, "--out"])
            .arg(out)
            .args(["--arch", "resnet8", "--epochs", "1", "--warmup-epochs", "0"])
            .args([
                "--batch-size",
                "4",
                "--image-size",
                "8",
                "--quiet",
                "--threads",
                "1",
            ])
            .arg("--config")
            .arg(&config);
        for var in [
            "HF_HOME",
            "HF_HUB_CACHE",
            "HUGGINGFACE_HUB_CACHE",
            "XDG_CACHE_HOME",
            "HF_HUB_OFFLINE",
            "HF_DATASETS_OFFLINE",
            "HF_ENDPOINT",
            "HF_TOKEN",
            "ALL_PROXY",
            "all_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "HTTP_PROXY",
            "http_proxy",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        Ok(cmd.output()?)
    }

    fn ok(out: &Output) -> Result<()> {
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.success() && !err.contains("panicked"),
            "trainer failed: {err}"
        );
        Ok(())
    }

    /// A listener on loopback that counts connections and answers each with `serve`.
    struct FakeHub {
        endpoint: String,
        connections: Arc<AtomicUsize>,
    }

    impl FakeHub {
        fn start(serve: fn(TcpStream) -> Result<()>) -> Result<Self> {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            let endpoint = format!("http://{}", listener.local_addr()?);
            let connections = Arc::new(AtomicUsize::new(0));
            let count = connections.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    count.fetch_add(1, Ordering::SeqCst);
                    std::thread::spawn(move || serve(stream));
                }
            });
            Ok(FakeHub {
                endpoint,
                connections,
            })
        }

        fn connections(&self) -> usize {
            self.connections.load(Ordering::SeqCst)
        }
    }

    /// Drops the connection without an answer: the Hub is unreachable.
    fn hang_up(_stream: TcpStream) -> Result<()> {
        Ok(())
    }

    /// The two Hub endpoints hf-hub calls, for `simclr-distill/tiny-cifar` at
    /// `refs/convert/parquet`, from the fixture cache's files: the revision's info (commit and
    /// files) and a file's download (with the `Range` requests, `ETag` and `X-Repo-Commit`).
    fn serve_tiny_cifar(stream: TcpStream) -> Result<()> {
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut stream = stream;
        loop {
            let mut request = String::new();
            if reader.read_line(&mut request)? == 0 {
                return Ok(());
            }
            let mut range = None;
            loop {
                let mut header = String::new();
                reader.read_line(&mut header)?;
                if header.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = header.split_once(':') {
                    if k.eq_ignore_ascii_case("range") {
                        range = v.trim().strip_prefix("bytes=").map(str::to_string);
                    }
                }
            }
            let path = request
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string();
            let snapshot = fixture_cache()
                .join("datasets--simclr-distill--tiny-cifar/snapshots")
                .join(TINY_CIFAR_COMMIT);
            let rev = "refs%2Fconvert%2Fparquet";
            let (status, headers, body): (&str, Vec<String>, Vec<u8>) =
                if path == format!("/api/datasets/simclr-distill/tiny-cifar/revision/{rev}") {
                    let mut siblings = vec![r#"{"rfilename":".gitattributes"}"#.to_string()];
                    for split in ["test/0000", "train/0000", "train/0001"] {
                        siblings.push(format!(r#"{{"rfilename":"plain_text/{split}.parquet"}}"#));
                    }
                    let json = format!(
                        r#"{{"sha":"{TINY_CIFAR_COMMIT}","siblings":[{}]}}"#,
                        siblings.join(",")
                    );
                    (
                        "200 OK",
                        vec!["Content-Type: application/json".into()],
                        json.into_bytes(),
                    )
                } else if let Some(file) = path.strip_prefix(&format!(
                    "/datasets/simclr-distill/tiny-cifar/resolve/{rev}/"
                )) {
                    let local = snapshot.join(file);
                    let data = std::fs::read(&local)?;
                    let etag = std::fs::read_link(&local)?
                        .file_name()
                        .context("blob name")?
                        .to_string_lossy()
                        .into_owned();
                    let (start, end) = match range.as_deref().and_then(|r| r.split_once('-')) {
                        Some((s, e)) => (
                            s.parse()?,
                            if e.is_empty() {
                                data.len() - 1
                            } else {
                                e.parse()?
                            },
                        ),
                        None => (0, data.len() - 1),
                    };
                    (
                        "206 Partial Content",
                        vec![
                            format!("ETag: \"{etag}\""),
                            format!("X-Repo-Commit: {TINY_CIFAR_COMMIT}"),
                            format!("Content-Range: bytes {start}-{end}/{}", data.len()),
                        ],
                        data[start..=end].to_vec(),
                    )
                } else {
                    ("404 Not Found", vec![], b"not found".to_vec())
                };
            write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\n",
                body.len()
            )?;
            for h in headers {
                write!(stream, "{h}\r\n")?;
            }
            write!(stream, "\r\n")?;
            stream.write_all(&body)?;
            stream.flush()?;
        }
    }

    /// Every file under `dir` as (relative path, symbolic link target or file bytes).
    fn tree(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d)? {
                let path = entry?.path();
                let rel = path.strip_prefix(dir)?.to_string_lossy().into_owned();
                let meta = std::fs::symlink_metadata(&path)?;
                if meta.file_type().is_symlink() {
                    let target = std::fs::read_link(&path)?;
                    out.insert(rel, target.to_string_lossy().as_bytes().to_vec());
                } else if meta.is_dir() {
                    stack.push(path);
                } else {
                    let mut bytes = Vec::new();
                    std::fs::File::open(&path)?.read_to_end(&mut bytes)?;
                    out.insert(rel, bytes);
                }
            }
        }
        Ok(out)
    }

    #[test]
    fn offline_binary_reads_hf_home_and_never_connects() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let hub = FakeHub::start(hang_up)?;
        let home = fixtures().join("hf_home");
        let env = |offline: bool| {
            let mut v: Vec<(&str, &OsStr)> = vec![
                ("HF_HOME", home.as_os_str()),
                ("HF_ENDPOINT", OsStr::new(&hub.endpoint)),
            ];
            if offline {
                v.push(("HF_HUB_OFFLINE", OsStr::new("1")));
            }
            v
        };
        ok(&teacher(
            "hub:simclr-distill/tiny-cifar",
            &dir.path().join("a"),
            &env(true),
        )?)?;
        assert_eq!(
            hub.connections(),
            0,
            "HF_HUB_OFFLINE=1 must not touch the network"
        );
        // Without HF_HUB_OFFLINE the Hub is asked first; unreachable, the cache is read.
        ok(&teacher(
            "hub:simclr-distill/tiny-cifar",
            &dir.path().join("b"),
            &env(false),
        )?)?;
        assert!(hub.connections() > 0, "the fake Hub saw no request");
        // Offline and not cached: the error names the dataset and the cache folder.
        let out = teacher(
            "hub:simclr-distill/elsewhere",
            &dir.path().join("c"),
            &env(true),
        )?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success() && err.contains("hub:simclr-distill/elsewhere"),
            "{err}"
        );
        ensure!(err.contains("datasets--simclr-distill--elsewhere"), "{err}");
        Ok(())
    }

    #[test]
    fn a_download_through_hf_hub_fills_the_cache_as_the_fixture_is_laid_out() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let hub = FakeHub::start(serve_tiny_cifar)?;
        let home = dir.path().join("hf_home");
        let env: Vec<(&str, &OsStr)> = vec![
            ("HF_HOME", home.as_os_str()),
            ("HF_ENDPOINT", OsStr::new(&hub.endpoint)),
        ];
        ok(&teacher(
            "hub:simclr-distill/tiny-cifar",
            &dir.path().join("a"),
            &env,
        )?)?;
        let repo = "datasets--simclr-distill--tiny-cifar";
        let downloaded = tree(&home.join("hub").join(repo))?;
        let fixture = tree(&fixture_cache().join(repo))?;
        // hf-hub 0.4 leaves its lock files beside the blobs (`blobs/<etag>.lock`);
        // huggingface_hub keeps them under `.locks/`.
        let keys = |t: &BTreeMap<String, Vec<u8>>| {
            t.keys()
                .filter(|k| !k.ends_with(".lock"))
                .cloned()
                .collect::<Vec<_>>()
        };
        ensure!(
            keys(&downloaded) == keys(&fixture),
            "{:?}\nvs the fixture's\n{:?}",
            keys(&downloaded),
            keys(&fixture)
        );
        for (k, v) in &fixture {
            if downloaded.get(k) != Some(v) {
                bail!("{k} differs from the fixture's");
            }
        }
        // And the cache hf-hub wrote reads offline, without the fake Hub.
        let split = load_hub(
            &"simclr-distill/tiny-cifar".parse()?,
            SIZE,
            &offline(home.join("hub")),
        )?;
        assert_eq!(split, hub_split()?);
        drop(hub);
        Ok(())
    }

    fn hub_split() -> Result<Split> {
        hub("simclr-distill/tiny-cifar")
    }
}
