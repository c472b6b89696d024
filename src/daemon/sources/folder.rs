//! Folders and single picture files.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};

use super::{Frame, FrameSource};
use crate::caption::preprocess;

/// A folder whose new pictures are captioned as they appear, or a single picture re-read every time.
pub struct FileSource {
    path: PathBuf,
    /// Folder entries already taken or passed over.
    seen: HashSet<OsString>,
}

impl FileSource {
    pub fn new(path: &Path) -> FileSource {
        FileSource {
            path: path.to_path_buf(),
            seen: HashSet::new(),
        }
    }

    /// The newest file not seen before; older unseen ones are passed over, since a caption of an old picture
    /// is stale news. Dot-files are skipped: writers create a dot-file and rename it when it is complete.
    fn newest_new_file(&mut self) -> Result<Option<PathBuf>> {
        let entries = fs::read_dir(&self.path)
            .with_context(|| format!("{}: cannot list the folder", self.path.display()))?;
        let mut newest: Option<(SystemTime, OsString)> = None;
        let mut present = HashSet::new();
        for entry in entries {
            let entry = entry
                .with_context(|| format!("{}: cannot list the folder", self.path.display()))?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            present.insert(name.clone());
            if self.seen.contains(&name) {
                continue;
            }
            // An entry that vanished or is not a file is not a picture; it may become one later.
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            self.seen.insert(name.clone());
            if newest
                .as_ref()
                .is_none_or(|best| (modified, &name) > (best.0, &best.1))
            {
                newest = Some((modified, name));
            }
        }
        // Forget what was removed: a folder that is emptied as it is filled would otherwise grow this forever.
        self.seen.retain(|name| present.contains(name));
        Ok(newest.map(|(_, name)| self.path.join(name)))
    }
}

impl FrameSource for FileSource {
    fn grab(&mut self) -> Result<Option<Frame>> {
        let path = if self.path.is_dir() {
            match self.newest_new_file()? {
                Some(path) => path,
                None => return Ok(None),
            }
        } else {
            self.path.clone()
        };
        let taken_at = SystemTime::now();
        let image = preprocess::load_rgb(&path)?;
        Ok(Some(Frame {
            image,
            origin: path.display().to_string(),
            taken_at,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_camera_forgets_pictures_that_were_removed() {
        let dir = std::env::temp_dir().join(format!("capdec-folder-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let picture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/images/rocket.jpg");
        let mut source = FileSource::new(&dir);
        for name in ["a.jpg", "b.jpg", "c.jpg"] {
            fs::copy(&picture, dir.join(name)).unwrap();
            let frame = source.grab().unwrap().expect("the new picture");
            assert!(frame.origin.ends_with(name), "{}", frame.origin);
            fs::remove_file(dir.join(name)).unwrap();
        }
        assert!(source.grab().unwrap().is_none());
        assert!(source.seen.is_empty(), "{:?}", source.seen);
        fs::remove_dir_all(&dir).unwrap();
    }
}
