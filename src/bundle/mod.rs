//! The model bundle: `bundle.toml` and the files it names (docs/bundle-format.md).
//!
//! Opening a bundle parses and cross-checks the manifest and checks that every file it names is listed, present,
//! inside the folder and of the listed size. Contents are hashed when they are read, from the very bytes that are
//! then parsed, so a file cannot change between its check and its use.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use sha2::{Digest, Sha256};

use crate::located::TomlFile;

mod manifest;

pub use manifest::*;

pub const MANIFEST: &str = "bundle.toml";

/// The default bundles, most capable first.
const DEFAULT_BUNDLES: [&str; 2] = ["models/demo", "models/fixture-tiny"];

/// The bundle folder to open: `dir` when given, else `$CAPDEC_MODEL`, else the first default bundle found above
/// the executable (`target/release/capdec` sits two levels below the repository) or in the current folder.
pub fn locate(dir: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = dir {
        return Ok(dir.to_path_buf());
    }
    if let Some(dir) = std::env::var_os("CAPDEC_MODEL").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let mut bases: Vec<PathBuf> = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        bases.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    if let Ok(cwd) = std::env::current_dir() {
        bases.push(cwd);
    }
    for name in DEFAULT_BUNDLES {
        if let Some(dir) = bases
            .iter()
            .map(|b| b.join(name))
            .find(|d| d.join(MANIFEST).is_file())
        {
            return Ok(dir);
        }
    }
    bail!(
        "no model bundle found: pass --model DIR or set CAPDEC_MODEL (looked for {})",
        DEFAULT_BUNDLES.join(" and ")
    )
}

/// A bundle whose manifest is consistent and whose files are all present with their listed sizes.
#[derive(Debug)]
pub struct Bundle {
    dir: PathBuf,
    pub manifest: Manifest,
}

/// A manifest's text, parsed and cross-checked; errors name `path`, and the line where there is one.
pub(crate) fn parse_manifest(text: &str, path: &Path) -> Result<Manifest> {
    let file = TomlFile { path, text };
    let manifest: Manifest =
        toml::from_str(text).map_err(|e| file.parse_error(&e, "invalid manifest: "))?;
    manifest
        .validate()
        .with_context(|| format!("{}: invalid manifest", path.display()))?;
    Ok(manifest)
}

impl Bundle {
    pub fn open(dir: &Path) -> Result<Bundle> {
        let manifest_path = dir.join(MANIFEST);
        let text = fs::read_to_string(&manifest_path).with_context(|| {
            format!(
                "{}: cannot read the bundle manifest",
                manifest_path.display()
            )
        })?;
        let manifest = parse_manifest(&text, &manifest_path)?;
        let bundle = Bundle {
            dir: dir.to_path_buf(),
            manifest,
        };
        for entry in &bundle.manifest.files {
            bundle.check_present(entry)?;
        }
        Ok(bundle)
    }

    /// A file's path for messages and for reading; `rel` is a manifest path, already validated.
    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub(crate) fn variant(&self, precision: &str) -> Result<&Variant> {
        self.manifest.variants.get(precision).with_context(|| {
            let known: Vec<&str> = self.manifest.variants.keys().map(String::as_str).collect();
            format!(
                "{}: bundle has no precision `{precision}` (it has: {})",
                self.path(MANIFEST).display(),
                known.join(", ")
            )
        })
    }

    /// The bytes of a file the manifest names, after checking them against its `[[files]]` entry.
    pub(crate) fn read_verified(&self, rel: &str) -> Result<Vec<u8>> {
        let path = self.path(rel);
        let entry = self
            .manifest
            .entry(rel)
            .with_context(|| format!("{}: not listed in [[files]]", path.display()))?;
        let bytes = fs::read(&path).with_context(|| format!("{}: cannot read", path.display()))?;
        ensure!(
            bytes.len() as u64 == entry.bytes,
            "{}: size is {} bytes, the manifest says {}",
            path.display(),
            bytes.len(),
            entry.bytes
        );
        let digest = hex(&Sha256::digest(&bytes));
        ensure!(
            digest == entry.sha256,
            "{}: SHA-256 is {digest}, the manifest says {}; the file is corrupt or the manifest is stale",
            path.display(),
            entry.sha256
        );
        Ok(bytes)
    }

    fn check_present(&self, entry: &FileEntry) -> Result<()> {
        let path = self.path(&entry.path);
        let meta = fs::metadata(&path)
            .with_context(|| format!("{}: missing from the bundle", path.display()))?;
        ensure!(meta.is_file(), "{}: not a regular file", path.display());
        // Lexical checks cannot see symbolic links, so compare where the file really is.
        let real = fs::canonicalize(&path)
            .with_context(|| format!("{}: cannot resolve", path.display()))?;
        let root = fs::canonicalize(&self.dir)
            .with_context(|| format!("{}: cannot resolve", self.dir.display()))?;
        ensure!(
            real.starts_with(&root),
            "{}: resolves outside the bundle folder",
            path.display()
        );
        ensure!(
            meta.len() == entry.bytes,
            "{}: size is {} bytes, the manifest says {}",
            path.display(),
            meta.len(),
            entry.bytes
        );
        Ok(())
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
