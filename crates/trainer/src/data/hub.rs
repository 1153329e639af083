//! `--data hub:OWNER/NAME[@REVISION][:CONFIG]`: an image-classification dataset's parquet shards
//! from the Hugging Face Hub, through the Hugging Face cache.
//!
//! The revision defaults to `refs/convert/parquet`, the branch where the Hub keeps every
//! dataset it can show in its viewer converted to parquet (`CONFIG/SPLIT/0000.parquet`, …; the
//! revision candle-datasets' `hub` module reads too). Another revision (`@main`, a commit hash)
//! reads the parquet files the dataset's authors committed (`data/train-00000-of-00001.parquet`, …).
//! Configs, splits and columns are chosen as [`super::parquet`] describes.
//!
//! # The cache
//! Files live where `huggingface_hub` (Python) and `hf-hub` (Rust) keep them, so that a dataset
//! downloaded by either is found by the other:
//!
//! ```text
//! $HF_HUB_CACHE (default $HF_HOME/hub, $HF_HOME default ~/.cache/huggingface)
//! └── datasets--OWNER--NAME/
//!     ├── refs/refs/convert/parquet        the commit the revision pointed at when last resolved
//!     ├── snapshots/<commit>/CONFIG/SPLIT/0000.parquet -> ../../../../blobs/<sha256>
//!     └── blobs/<sha256>
//! ```
//!
//! Online, the revision's commit and file list come from the Hub's API (`/api/datasets/OWNER/NAME/
//! revision/REVISION`, hf-hub's `ApiRepo::info`, the call candle-datasets' `from_hub` makes), the
//! revision's ref is written to the cache, and each shard of the two splits is taken from the
//! commit's snapshot or, when missing, downloaded by hf-hub into it. Offline (`HF_HUB_OFFLINE=1`,
//! or the Hub unreachable while the cache holds the revision, as `huggingface_hub` falls back),
//! the commit comes from `refs/` and the file list from the snapshot folder: no network access is
//! attempted. From the file list on, both take the same path: the same choice of shards, the same
//! snapshot files, the same parquet reader. A snapshot holds only what was downloaded: offline,
//! a split whose download was interrupted reads as the shards that arrived.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};

use super::parquet::{choose_splits, list_parquet_files, load_parquet_files};
use super::{DataError, Split};

/// The revision read when none is given: the Hub's parquet conversion of the dataset.
pub const PARQUET_REVISION: &str = "refs/convert/parquet";

/// A dataset on the Hub: `OWNER/NAME[@REVISION][:CONFIG]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubDataset {
    /// `OWNER/NAME`.
    pub repo_id: String,
    /// A branch, tag or commit hash; `None` for [`PARQUET_REVISION`].
    pub revision: Option<String>,
    /// The config (subset) to read; `None` for the only one, or `default`.
    pub config: Option<String>,
}

impl HubDataset {
    /// The revision read: the given one or [`PARQUET_REVISION`].
    pub fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or(PARQUET_REVISION)
    }

    /// The dataset's folder in the cache: `datasets--OWNER--NAME`.
    pub fn cache_folder(&self) -> String {
        format!("datasets--{}", self.repo_id.replace('/', "--"))
    }
}

impl FromStr for HubDataset {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| {
            DataError::Invalid(format!(
                "--data hub:{s}: {why} (expected hub:OWNER/NAME, hub:OWNER/NAME@REVISION, hub:OWNER/NAME:CONFIG \
                 or hub:OWNER/NAME@REVISION:CONFIG)"
            ))
        };
        let (rest, config) = match s.split_once(':') {
            Some((r, c)) => (r, Some(c)),
            None => (s, None),
        };
        let (repo_id, revision) = match rest.split_once('@') {
            Some((r, v)) => (r, Some(v)),
            None => (rest, None),
        };
        let name_ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        match repo_id.split_once('/') {
            Some((owner, name)) if name_ok(owner) && name_ok(name) => {}
            _ => {
                return Err(bad(
                    "the dataset must be OWNER/NAME (letters, digits, `-`, `_`, `.`)",
                ))
            }
        }
        if revision.is_some_and(|r| r.is_empty() || r.contains("..")) {
            return Err(bad("empty or invalid revision"));
        }
        if config.is_some_and(|c| c.is_empty() || c.contains('/')) {
            return Err(bad("empty or invalid config"));
        }
        Ok(HubDataset {
            repo_id: repo_id.to_string(),
            revision: revision.map(str::to_string),
            config: config.map(str::to_string),
        })
    }
}

impl std::fmt::Display for HubDataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "hub:{}", self.repo_id)?;
        if let Some(r) = &self.revision {
            write!(f, "@{r}")?;
        }
        if let Some(c) = &self.config {
            write!(f, ":{c}")?;
        }
        Ok(())
    }
}

/// How [`load_hub`] reaches the Hub and its cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubOptions {
    /// The Hugging Face hub cache folder (holding `datasets--OWNER--NAME/`).
    pub cache_dir: PathBuf,
    /// Read the cache only; never touch the network.
    pub offline: bool,
    /// The Hub's address; `None` for `https://huggingface.co`.
    pub endpoint: Option<String>,
    /// An access token (gated and private datasets); `None` for the one saved by
    /// `huggingface-cli login` next to the cache, if any.
    pub token: Option<String>,
    /// Let hf-hub draw its download progress bars on stderr (only when stderr is a terminal).
    pub progress: bool,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// True for the values `huggingface_hub` reads as true: `1`, `ON`, `YES`, `TRUE`, any case.
fn env_true(name: &str) -> bool {
    env(name).is_some_and(|v| ["1", "ON", "YES", "TRUE"].contains(&v.to_uppercase().as_str()))
}

fn expand_home(p: String) -> PathBuf {
    match (p.strip_prefix("~/"), env("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(p),
    }
}

/// The cache folder `huggingface_hub` uses: `$HF_HUB_CACHE`, else `$HUGGINGFACE_HUB_CACHE`, else
/// `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
pub fn hub_cache_dir_from_env() -> PathBuf {
    if let Some(p) = env("HF_HUB_CACHE").or_else(|| env("HUGGINGFACE_HUB_CACHE")) {
        return expand_home(p);
    }
    let home = env("HF_HOME").map(expand_home).unwrap_or_else(|| {
        env("XDG_CACHE_HOME")
            .map(expand_home)
            .unwrap_or_else(|| expand_home("~/.cache".to_string()))
            .join("huggingface")
    });
    home.join("hub")
}

impl HubOptions {
    /// The options `huggingface_hub` takes from the environment: the cache folder
    /// ([`hub_cache_dir_from_env`]), `HF_HUB_OFFLINE` (or `HF_DATASETS_OFFLINE`), `HF_ENDPOINT`,
    /// `HF_TOKEN`; progress bars when stderr is a terminal.
    pub fn from_env() -> Self {
        use std::io::IsTerminal;
        HubOptions {
            cache_dir: hub_cache_dir_from_env(),
            offline: env_true("HF_HUB_OFFLINE") || env_true("HF_DATASETS_OFFLINE"),
            endpoint: env("HF_ENDPOINT"),
            token: env("HF_TOKEN"),
            progress: std::io::stderr().is_terminal(),
        }
    }
}

/// Python's `REGEX_COMMIT_HASH`: 40 lowercase hex digits.
fn is_commit_hash(revision: &str) -> bool {
    revision.len() == 40
        && revision
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The commit `revision` stands for in the cached repository `repo_dir`: the revision itself when
/// it is a commit hash, else the content of `refs/<revision>`.
fn cached_commit(repo_dir: &Path, revision: &str) -> Option<String> {
    if is_commit_hash(revision) {
        return Some(revision.to_string());
    }
    let commit = std::fs::read_to_string(repo_dir.join("refs").join(revision)).ok()?;
    let commit = commit.trim();
    is_commit_hash(commit).then(|| commit.to_string())
}

/// The revision's commit and files: online, every file of the commit and the hf-hub repository
/// to download missing ones from; offline, the parquet files of the commit's snapshot.
struct Listing {
    commit: String,
    names: Vec<String>,
    remote: Option<Remote>,
}

/// The dataset's repository at the requested revision, as hf-hub reaches it.
struct Remote {
    repo: ApiRepo,
    endpoint: String,
}

fn cached_listing(
    what: &str,
    repo_dir: &Path,
    revision: &str,
    why_cache: &str,
) -> Result<Listing, DataError> {
    let commit = cached_commit(repo_dir, revision).ok_or_else(|| {
        DataError::Invalid(format!(
            "{what}: {why_cache}, and the Hugging Face cache holds no revision `{revision}` of it \
             ({} is missing); run once with network access (without HF_HUB_OFFLINE) to download it",
            repo_dir.join("refs").join(revision).display()
        ))
    })?;
    let snapshot = repo_dir.join("snapshots").join(&commit);
    if !snapshot.is_dir() {
        return Err(DataError::Invalid(format!(
            "{what}: {why_cache}, and the cached revision `{revision}` (commit {commit}) has no files: {} is missing",
            snapshot.display()
        )));
    }
    let names = list_parquet_files(&snapshot)?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    Ok(Listing {
        commit,
        names,
        remote: None,
    })
}

/// True when the Hub could not be reached at all (no HTTP answer): then the cache is read, as
/// `huggingface_hub` does.
fn unreachable(e: &ApiError) -> bool {
    matches!(e, ApiError::RequestError(r) if matches!(**r, ureq::Error::Transport(_)))
}

fn explain(e: &ApiError) -> String {
    match e {
        ApiError::RequestError(r) => match &**r {
            ureq::Error::Status(404, _) => format!(
                "{e}: no such dataset or revision (every dataset the Hub's viewer shows has the \
                 revision refs/convert/parquet; another revision is named with @REVISION)"
            ),
            ureq::Error::Status(401 | 403, _) => format!(
                "{e}: a gated or private dataset: accept its terms on the Hub and set HF_TOKEN \
                 (or log in with `huggingface-cli login`)"
            ),
            _ => e.to_string(),
        },
        _ => e.to_string(),
    }
}

/// The revision's commit and file list from the Hub's API (hf-hub's `ApiRepo::info`); the
/// revision's ref is written to the cache, as a download would write it. When the Hub cannot be
/// reached, the cache's listing instead.
fn remote_listing(
    ds: &HubDataset,
    what: &str,
    cache_dir: &Path,
    repo_dir: &Path,
    opts: &HubOptions,
) -> Result<Listing, DataError> {
    let revision = ds.revision();
    let endpoint = opts
        .endpoint
        .clone()
        .unwrap_or_else(|| "https://huggingface.co".to_string());
    let cache = Cache::new(cache_dir.to_path_buf());
    let mut builder = ApiBuilder::from_cache(cache.clone())
        .with_endpoint(endpoint.clone())
        .with_progress(opts.progress);
    if opts.token.is_some() {
        builder = builder.with_token(opts.token.clone());
    }
    let api = builder
        .build()
        .map_err(|e| DataError::Invalid(format!("{what}: {e}")))?;
    let spec = Repo::with_revision(ds.repo_id.clone(), RepoType::Dataset, revision.to_string());
    let repo = api.repo(spec.clone());
    let info = match repo.info() {
        Ok(info) => info,
        Err(e) if unreachable(&e) => {
            let why = format!("{endpoint} cannot be reached ({e})");
            return cached_listing(what, repo_dir, revision, &why);
        }
        Err(e) => {
            return Err(DataError::Invalid(format!(
                "{what}: listing revision `{revision}` at {endpoint}: {}",
                explain(&e)
            )))
        }
    };
    if !is_commit_hash(revision) {
        cache
            .repo(spec)
            .create_ref(&info.sha)
            .map_err(|e| DataError::io(repo_dir.join("refs").join(revision), e))?;
    }
    Ok(Listing {
        commit: info.sha,
        names: info.siblings.into_iter().map(|s| s.rfilename).collect(),
        remote: Some(Remote { repo, endpoint }),
    })
}

/// Loads the train and test splits of `ds` (see the module documentation), images resized to
/// `image_size` squared.
///
/// Errors name the dataset (with its revision and config) and, past the listing, the split,
/// shard, row and column.
pub fn load_hub(ds: &HubDataset, image_size: usize, opts: &HubOptions) -> Result<Split, DataError> {
    let what = ds.to_string();
    let revision = ds.revision();
    // hf-hub links snapshots to blobs by relative paths computed from absolute ones.
    let cache_dir =
        std::path::absolute(&opts.cache_dir).map_err(|e| DataError::io(&opts.cache_dir, e))?;
    let repo_dir = cache_dir.join(ds.cache_folder());
    let listing = if opts.offline {
        cached_listing(&what, &repo_dir, revision, "HF_HUB_OFFLINE is set")?
    } else {
        remote_listing(ds, &what, &cache_dir, &repo_dir, opts)?
    };
    let name_config = |c: &str| {
        let rev = ds
            .revision
            .as_ref()
            .map(|r| format!("@{r}"))
            .unwrap_or_default();
        format!("hub:{}{rev}:{c}", ds.repo_id)
    };
    let chosen = choose_splits(&what, &listing.names, ds.config.as_deref(), &name_config)?;
    let snapshot = repo_dir.join("snapshots").join(&listing.commit);
    let mut files = Vec::new();
    for name in chosen.train.iter().chain(&chosen.test) {
        let local = snapshot.join(name);
        let path = match &listing.remote {
            _ if local.is_file() => local,
            Some(remote) => remote.repo.download(name).map_err(|e| {
                DataError::Invalid(format!(
                    "{what}: downloading {name} from {}: {}",
                    remote.endpoint,
                    explain(&e)
                ))
            })?,
            None => {
                return Err(DataError::Invalid(format!(
                    "{what}: {name} is not in the cache ({} is missing)",
                    local.display()
                )))
            }
        };
        files.push((name.clone(), path));
    }
    load_parquet_files(
        &what,
        &files,
        Some(&chosen.config),
        &name_config,
        image_size,
    )
}
