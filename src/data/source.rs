//! Dataset readers: which images a dataset holds, their labels, and their bytes.
//!
//! A dataset is a folder or an uncompressed tar archive of one, in one of two layouts:
//! - class folders (ImageFolder; ImageNet's `train/`, CIFAR-10's tars): `<root>/<class>/<image>`.
//!   A tar may wrap the tree in one top folder (`train/<class>/<image>`).
//! - flat, with a labels file (ImageNet's `val/`): `<root>/<image>`; see [`OpenOptions::labels`].
//!
//! Classes are the sorted folder names; samples are ordered by class, then by file name (the
//! order torchvision's ImageFolder uses). Only files named `*.jpg`, `*.jpeg` or `*.png` (any case)
//! count as images, and hidden files (`.name`) are skipped; what is inside is detected from the
//! content, not the name. A tar is indexed once (member offsets and sizes) and then read in place,
//! from any number of threads at once, by positioned reads.

use super::decode;
use super::synthetic::Synthetic;
use anyhow::{Context, Result, anyhow, bail, ensure};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Component, Path, PathBuf};

/// One image of a dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Path relative to the dataset root (a folder) or the member path (a tar), `/`-separated.
    pub name: String,
    /// Index into [`Dataset::classes`].
    pub label: u32,
    /// Where a tar member's bytes start, and how many there are (unused for folders).
    offset: u64,
    size: u64,
}

/// How to open a dataset: the defaults read class folders.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// Read the flat layout: every image directly in the root (or in the tar's one top folder),
    /// labelled by this text file. Two forms are accepted (blank lines and `#` lines are skipped):
    /// - `<file name> <label>` per line (e.g. Caffe's ImageNet `val.txt`); images without a line
    ///   are skipped with a warning, a line naming a missing image is an error;
    /// - one `<label>` per line: line i labels the i-th image in sorted file-name order (the
    ///   counts must match).
    ///
    /// A label is a class name, or a 0-based index into the sorted class list (which needs
    /// [`OpenOptions::classes`]); a token that is a class name is read as a name. ILSVRC-2012's
    /// devkit ground truth uses its own 1-based ids in another order: convert it to wnids first.
    pub labels: Option<PathBuf>,
    /// The training set's classes, so that labels mean the same in every split: class folders
    /// must be among them, label indices refer to them. Without it, classes are this dataset's
    /// own folder names (or, flat, the sorted distinct label names).
    pub classes: Option<Vec<String>>,
    /// The most bytes one image file may hold; a larger one is skipped by name without being
    /// read [default: [`crate::files::DEFAULT_MAX_IMAGE_BYTES`]].
    pub max_image_bytes: Option<u64>,
}

/// A dataset: its classes, its samples, and the means to read them.
pub struct Dataset {
    path: PathBuf,
    classes: Vec<String>,
    samples: Vec<Sample>,
    store: Store,
    warnings: Vec<String>,
    max_image_bytes: u64,
}

enum Store {
    Folder,
    Tar(File),
    /// A pack split's shards (path, file) and each sample's shard.
    Pack {
        shards: Vec<(PathBuf, File)>,
        shard_of: Vec<u32>,
        /// Each sample's member key (its index in the source).
        keys: Vec<u32>,
    },
    Synthetic(Synthetic),
}

impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset")
            .field("path", &self.path)
            .field("classes", &self.classes.len())
            .field("samples", &self.samples.len())
            .finish()
    }
}

/// A file found while listing a dataset: path components below the root, and for a tar member
/// where its bytes lie.
struct Found {
    parts: Vec<String>,
    offset: u64,
    size: u64,
}

impl Dataset {
    /// Opens a folder or tar of class folders.
    pub fn open(path: impl AsRef<Path>) -> Result<Dataset> {
        Self::open_with(path, &OpenOptions::default())
    }

    /// Opens a folder or tar with the given options (a labels file reads the flat layout).
    pub fn open_with(path: impl AsRef<Path>, options: &OpenOptions) -> Result<Dataset> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path)
            .with_context(|| format!("dataset not found: {}", path.display()))?;
        if meta.is_dir() && path.join(super::pack::format::MANIFEST).exists() {
            return Self::open_pack(path, options);
        }
        let flat = options.labels.is_some();
        let (store, listing) = if meta.is_dir() {
            (Store::Folder, list_folder(path, flat)?)
        } else {
            let (file, listing) = list_tar(path, flat)?;
            (Store::Tar(file), listing)
        };
        let mut dataset = Dataset {
            path: path.to_path_buf(),
            classes: Vec::new(),
            samples: Vec::new(),
            store,
            warnings: Vec::new(),
            max_image_bytes: options
                .max_image_bytes
                .unwrap_or(crate::files::DEFAULT_MAX_IMAGE_BYTES),
        };
        dataset.report_unreadable(&listing.unreadable);
        dataset.arrange(listing.files, listing.dirs, options)?;
        Ok(dataset)
    }

    /// A pack split (see [`super::pack`]): its manifest and shards checked, samples in the
    /// order they were packed (the source's, less its unreadable files).
    fn open_pack(path: &Path, options: &OpenOptions) -> Result<Dataset> {
        ensure!(
            options.labels.is_none(),
            "{} is a pack, which carries its labels: no labels file is read for it",
            path.display()
        );
        let opened = super::pack::reader::open(path)?;
        let m = &opened.manifest;
        if let Some(classes) = &options.classes {
            ensure!(
                classes == &m.classes,
                "{} was packed with {} classes that are not the training set's {}",
                path.display(),
                m.classes.len(),
                classes.len()
            );
        }
        let mut warnings = Vec::new();
        if !m.skipped.is_empty() {
            warnings.push(format!(
                "{}: {} unreadable files of {} were left out when it was packed (listed in its {})",
                path.display(),
                m.skipped.len(),
                m.source,
                super::pack::format::MANIFEST
            ));
        }
        let (mut samples, mut shard_of, mut keys) = (Vec::new(), Vec::new(), Vec::new());
        for (s, lines) in opened.entries.into_iter().enumerate() {
            for e in lines {
                samples.push(Sample {
                    name: e.name,
                    label: e.label,
                    offset: e.offset,
                    size: e.size,
                });
                shard_of.push(s as u32);
                keys.push(e.key);
            }
        }
        ensure!(
            !samples.is_empty(),
            "the pack {} holds no images",
            path.display()
        );
        Ok(Dataset {
            path: path.to_path_buf(),
            classes: m.classes.clone(),
            samples,
            store: Store::Pack {
                shards: opened.shards,
                shard_of,
                keys,
            },
            warnings,
            max_image_bytes: options
                .max_image_bytes
                .unwrap_or(crate::files::DEFAULT_MAX_IMAGE_BYTES),
        })
    }

    /// Whether this is a pack split.
    pub fn is_pack(&self) -> bool {
        matches!(self.store, Store::Pack { .. })
    }

    /// The built-in procedural dataset (see [`super::synthetic`]).
    pub fn synthetic(synthetic: Synthetic) -> Dataset {
        let classes = super::synthetic::CLASSES.map(String::from).to_vec();
        let samples = (0..synthetic.len())
            .map(|i| Sample {
                name: format!("{}/{i:06}", classes[synthetic.label(i) as usize]),
                label: synthetic.label(i),
                offset: 0,
                size: 0,
            })
            .collect();
        Dataset {
            path: PathBuf::from(format!("synthetic:{}", synthetic.describe())),
            classes,
            samples,
            store: Store::Synthetic(synthetic),
            warnings: Vec::new(),
            max_image_bytes: crate::files::DEFAULT_MAX_IMAGE_BYTES,
        }
    }

    /// The path this dataset was opened from (`synthetic:...` for the built-in one).
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn is_synthetic(&self) -> bool {
        matches!(self.store, Store::Synthetic(_))
    }
    /// Class names; label `i` is `classes()[i]`.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }
    pub fn len(&self) -> usize {
        self.samples.len()
    }
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
    pub fn label(&self, index: usize) -> u32 {
        self.samples[index].label
    }
    /// Things found while opening that did not stop it (empty class folders, skipped files): the
    /// caller should print them.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
    /// Samples per class, indexed by label.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for s in &self.samples {
            counts[s.label as usize] += 1;
        }
        counts
    }

    /// Where sample `index` lives, for messages: `<root>/<name>` or `<tar>:<member>`.
    pub fn describe(&self, index: usize) -> String {
        let name = &self.samples[index].name;
        match &self.store {
            Store::Folder => self.path.join(name).display().to_string(),
            Store::Pack {
                shards,
                shard_of,
                keys,
            } => {
                let shard = &shards[shard_of[index] as usize].0;
                format!("{}:{:08}.jpg ({name})", shard.display(), keys[index])
            }
            Store::Tar(_) | Store::Synthetic(_) => format!("{}:{name}", self.path.display()),
        }
    }

    /// A fingerprint of what the dataset holds: XXH3-64 over its classes and every sample's name,
    /// label and (for tar members) size, as 16 hex digits. Cheap (no file is read), and it changes
    /// when images are added, removed, renamed or relabelled, which is what would make a resumed
    /// run see other batches than the ones it started with; a file rewritten in place under the
    /// same name is not noticed.
    pub fn fingerprint(&self) -> String {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        let mut field = |bytes: &[u8]| {
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        if let Store::Synthetic(s) = &self.store {
            field(s.describe().as_bytes());
        }
        for c in &self.classes {
            field(c.as_bytes());
        }
        for s in &self.samples {
            field(s.name.as_bytes());
            field(&s.label.to_le_bytes());
            field(&s.size.to_le_bytes());
        }
        format!("{:016x}", h.digest())
    }

    /// The encoded bytes of sample `index` (an error for the synthetic dataset, which has none).
    /// Errors name the file.
    pub fn read(&self, index: usize) -> Result<Vec<u8>> {
        self.read_unnamed(index)
            .with_context(|| format!("reading {}", self.describe(index)))
    }

    /// [`Dataset::read`] with errors that do not repeat the file's name (the caller gives it).
    fn read_unnamed(&self, index: usize) -> Result<Vec<u8>> {
        let sample = &self.samples[index];
        let cap = self.max_image_bytes;
        match &self.store {
            Store::Folder => crate::files::read_capped_unnamed(&self.path.join(&sample.name), cap),
            Store::Tar(file) => {
                ensure!(
                    sample.size <= cap,
                    "the member is {} bytes, more than the limit of {cap} bytes per image",
                    sample.size
                );
                Ok(read_at(file, sample.offset, sample.size as usize)?)
            }
            Store::Pack {
                shards, shard_of, ..
            } => {
                ensure!(
                    sample.size <= cap,
                    "the image is {} bytes, more than the limit of {cap} bytes per image",
                    sample.size
                );
                let file = &shards[shard_of[index] as usize].1;
                Ok(read_at(file, sample.offset, sample.size as usize)?)
            }
            Store::Synthetic(_) => bail!("the synthetic dataset has no files"),
        }
    }

    /// Sample `index` as a `base`×`base` RGB image, `u8` in HWC order: decoded and cut to the
    /// centred square, then resized (see [`decode::to_base`]). Errors name the file.
    pub fn load(&self, index: usize, base: usize) -> Result<Vec<u8>> {
        self.load_unnamed(index, base)
            .with_context(|| format!("cannot use {}", self.describe(index)))
    }

    /// [`Dataset::load`] with errors that do not name the file, for reports that name it once
    /// themselves ([`super::BadSample`]).
    pub(crate) fn load_unnamed(&self, index: usize, base: usize) -> Result<Vec<u8>> {
        if let Store::Synthetic(synthetic) = &self.store {
            return Ok(synthetic.render(index, base));
        }
        let bytes = self.read_unnamed(index)?;
        decode::decode_base(&bytes, base)
    }

    /// Entries that are no image to read (FIFOs, devices, broken links, names that are not
    /// UTF-8): each named in the warnings, up to a screenful.
    fn report_unreadable(&mut self, unreadable: &[(String, String)]) {
        const SHOWN: usize = 20;
        for (name, why) in unreadable.iter().take(SHOWN) {
            self.warnings
                .push(format!("skipped {}: {why}", self.member_path(name)));
        }
        if unreadable.len() > SHOWN {
            self.warnings.push(format!(
                "{}: skipped {} more entries that are not readable files",
                self.path.display(),
                unreadable.len() - SHOWN
            ));
        }
    }

    /// Turns the listing into classes and samples.
    fn arrange(
        &mut self,
        files: Vec<Found>,
        dirs: Vec<Vec<String>>,
        options: &OpenOptions,
    ) -> Result<()> {
        let (mut images, mut skipped) = (Vec::new(), Vec::new());
        for f in files {
            if is_image(&f.parts) {
                images.push(f);
            } else {
                skipped.push(f.parts.join("/"));
            }
        }
        if !skipped.is_empty() {
            self.warnings.push(format!(
                "{}: skipped {} hidden or non-image files (only .jpg, .jpeg and .png are read), e.g. {}",
                self.path.display(),
                skipped.len(),
                examples(&skipped)
            ));
        }
        match &options.labels {
            Some(labels) => self.arrange_flat(images, labels, options.classes.as_deref())?,
            None => self.arrange_classes(images, dirs, options.classes.as_deref())?,
        }
        ensure!(
            !self.samples.is_empty(),
            "no images in {}: expected {}",
            self.path.display(),
            if options.labels.is_some() {
                "<root>/<image> files named in the labels file"
            } else {
                "class folders, <root>/<class>/<image>.JPEG"
            }
        );
        Ok(())
    }

    fn arrange_classes(
        &mut self,
        images: Vec<Found>,
        dirs: Vec<Vec<String>>,
        given: Option<&[String]>,
    ) -> Result<()> {
        // Class folders are the top-level folders, whether or not they hold images.
        let mut by_class: BTreeMap<String, Vec<Found>> = BTreeMap::new();
        for d in dirs
            .iter()
            .filter(|d| d.len() == 1 && !d[0].starts_with('.'))
        {
            by_class.entry(d[0].clone()).or_default();
        }
        let mut stray = Vec::new();
        for f in images {
            if f.parts.len() == 2 {
                by_class.entry(f.parts[0].clone()).or_default().push(f);
            } else {
                stray.push(f.parts.join("/"));
            }
        }
        if !stray.is_empty() {
            self.warnings.push(format!(
                "{}: skipped {} images that are not at <class>/<image>, e.g. {}",
                self.path.display(),
                stray.len(),
                examples(&stray)
            ));
        }
        self.classes = match given {
            Some(classes) => classes.to_vec(),
            None => by_class.keys().cloned().collect(),
        };
        let index: BTreeMap<&str, u32> = self
            .classes
            .iter()
            .enumerate()
            .map(|(i, c)| (c.as_str(), i as u32))
            .collect();
        for (class, mut files) in by_class {
            let label = *index.get(class.as_str()).ok_or_else(|| {
                anyhow!(
                    "{}: class folder {class:?} is not one of the {} training classes",
                    self.path.display(),
                    self.classes.len()
                )
            })?;
            if files.is_empty() {
                self.warnings
                    .push(format!("empty class folder: {}", self.member_path(&class)));
            }
            files.sort_by(|a, b| a.parts.cmp(&b.parts));
            self.samples.extend(files.into_iter().map(|f| Sample {
                name: f.parts.join("/"),
                label,
                offset: f.offset,
                size: f.size,
            }));
        }
        self.samples.sort_by_key(|s| s.label);
        Ok(())
    }

    fn arrange_flat(
        &mut self,
        images: Vec<Found>,
        labels_path: &Path,
        given: Option<&[String]>,
    ) -> Result<()> {
        let mut files: Vec<Found> = Vec::new();
        let mut stray = Vec::new();
        for f in images {
            if f.parts.len() == 1 {
                files.push(f);
            } else {
                stray.push(f.parts.join("/"));
            }
        }
        if !stray.is_empty() {
            self.warnings.push(format!(
                "{}: skipped {} images in subfolders of a flat dataset, e.g. {}",
                self.path.display(),
                stray.len(),
                examples(&stray)
            ));
        }
        files.sort_by(|a, b| a.parts.cmp(&b.parts));
        let text = crate::files::read_text(labels_path).context("reading the labels file")?;
        let lines = parse_labels(&text)
            .with_context(|| format!("labels file {}", labels_path.display()))?;
        if given.is_none() && lines.iter().any(|l| l.label.parse::<u32>().is_ok()) {
            bail!(
                "{}: integer labels index the training set's classes; open this split with the training set's class list",
                labels_path.display()
            );
        }
        // Classes: the training set's, or the distinct names the file uses.
        self.classes = match given {
            Some(classes) => classes.to_vec(),
            None => {
                let names: BTreeSet<&str> = lines.iter().map(|l| l.label.as_str()).collect();
                names.into_iter().map(String::from).collect()
            }
        };
        let class_index: BTreeMap<&str, u32> = self
            .classes
            .iter()
            .enumerate()
            .map(|(i, c)| (c.as_str(), i as u32))
            .collect();
        let to_label = |line: &LabelLine| -> Result<u32> {
            if let Some(&l) = class_index.get(line.label.as_str()) {
                return Ok(l);
            }
            match line.label.parse::<u32>() {
                Ok(i) if (i as usize) < self.classes.len() => Ok(i),
                Ok(i) => bail!(
                    "{}: line {}: label {i} is out of range for {} classes",
                    labels_path.display(),
                    line.number,
                    self.classes.len()
                ),
                Err(_) => bail!(
                    "{}: line {}: {:?} is not a class name",
                    labels_path.display(),
                    line.number,
                    line.label
                ),
            }
        };
        let paired = lines.first().is_some_and(|l| l.file.is_some());
        if paired {
            let mut by_name: BTreeMap<String, Found> =
                files.into_iter().map(|f| (f.parts[0].clone(), f)).collect();
            let mut labelled = Vec::with_capacity(lines.len());
            for line in &lines {
                let file = line.file.as_deref().unwrap_or_default();
                let f = by_name.remove(file).ok_or_else(|| {
                    anyhow!(
                        "{}: line {}: no image {} in the dataset",
                        labels_path.display(),
                        line.number,
                        self.member_path(file)
                    )
                })?;
                labelled.push((f, to_label(line)?));
            }
            if let Some(first) = by_name.keys().next() {
                self.warnings.push(format!(
                    "{}: skipped {} images that have no line in {}, e.g. {first}",
                    self.path.display(),
                    by_name.len(),
                    labels_path.display()
                ));
            }
            labelled.sort_by(|a, b| a.0.parts.cmp(&b.0.parts));
            self.samples = labelled
                .into_iter()
                .map(|(f, label)| Sample {
                    name: f.parts.join("/"),
                    label,
                    offset: f.offset,
                    size: f.size,
                })
                .collect();
        } else {
            ensure!(
                lines.len() == files.len(),
                "{} has {} labels but {} holds {} images; a plain list labels the images in sorted file-name order, so the counts must match",
                labels_path.display(),
                lines.len(),
                self.path.display(),
                files.len()
            );
            self.samples = files
                .into_iter()
                .zip(&lines)
                .map(|(f, line)| {
                    Ok(Sample {
                        name: f.parts.join("/"),
                        label: to_label(line)?,
                        offset: f.offset,
                        size: f.size,
                    })
                })
                .collect::<Result<_>>()?;
        }
        Ok(())
    }

    /// A path inside the dataset, for messages.
    fn member_path(&self, relative: &str) -> String {
        match self.store {
            Store::Folder => self.path.join(relative).display().to_string(),
            _ => format!("{}:{relative}", self.path.display()),
        }
    }
}

/// One line of a labels file.
struct LabelLine {
    number: usize,
    file: Option<String>,
    label: String,
}

fn parse_labels(text: &str) -> Result<Vec<LabelLine>> {
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let (file, label) = match tokens[..] {
            [label] => (None, label),
            [file, label] => (Some(file.to_string()), label),
            _ => bail!(
                "line {}: expected `<file> <label>` or `<label>`, found {line:?}",
                i + 1
            ),
        };
        lines.push(LabelLine {
            number: i + 1,
            file,
            label: label.to_string(),
        });
    }
    ensure!(!lines.is_empty(), "no labels");
    let paired = lines[0].file.is_some();
    if let Some(odd) = lines.iter().find(|l| l.file.is_some() != paired) {
        bail!(
            "line {}: mixes `<file> <label>` lines with plain `<label>` lines",
            odd.number
        );
    }
    Ok(lines)
}

/// Up to three names from a list, for messages.
fn examples(names: &[String]) -> String {
    let shown = names.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > 3 {
        format!("{shown}, ...")
    } else {
        shown
    }
}

fn is_image(parts: &[String]) -> bool {
    let Some(name) = parts.last() else {
        return false;
    };
    if parts.iter().any(|p| p.starts_with('.')) {
        return false;
    }
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".jpg") || lower.ends_with(".jpeg") || lower.ends_with(".png")
}

/// What listing a dataset found: files (with where a tar member's bytes lie), folders, and the
/// entries that cannot be read as files, each with the reason.
#[derive(Default)]
struct Listing {
    files: Vec<Found>,
    dirs: Vec<Vec<String>>,
    /// (path below the root, lossily if not UTF-8; why it is not read).
    unreadable: Vec<(String, String)>,
}

/// Lists a folder two levels deep (`<class>/<image>`), or one level when `flat`.
fn list_folder(root: &Path, flat: bool) -> Result<Listing> {
    let mut listing = Listing::default();
    for entry in read_dir_sorted(root, &[], &mut listing.unreadable)? {
        match entry {
            (name, EntryKind::File) => listing.files.push(Found {
                parts: vec![name],
                offset: 0,
                size: 0,
            }),
            (name, EntryKind::Dir) if !flat && !name.starts_with('.') => {
                let parent = [name.clone()];
                for inner in read_dir_sorted(&root.join(&name), &parent, &mut listing.unreadable)? {
                    if let (inner, EntryKind::File) = inner {
                        listing.files.push(Found {
                            parts: vec![name.clone(), inner],
                            offset: 0,
                            size: 0,
                        });
                    }
                }
                listing.dirs.push(vec![name]);
            }
            _ => {}
        }
    }
    Ok(listing)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum EntryKind {
    File,
    Dir,
}

/// Entries of a folder that are regular files or folders (symbolic links resolved), sorted by
/// name. Everything else (FIFOs, sockets, devices, broken or looping links, names that are not
/// UTF-8) is added to `unreadable` as `parent/name` with the reason; it never stops the listing.
fn read_dir_sorted(
    dir: &Path,
    parent: &[String],
    unreadable: &mut Vec<(String, String)>,
) -> Result<Vec<(String, EntryKind)>> {
    let below = |name: &str| {
        let mut parts = parent.to_vec();
        parts.push(name.to_string());
        parts.join("/")
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = match entry.file_name().into_string() {
            Ok(name) => name,
            Err(raw) => {
                let lossy = raw.to_string_lossy().into_owned();
                unreadable.push((below(&lossy), "its name is not UTF-8".into()));
                continue;
            }
        };
        // The entry's own type comes with the listing; only links need a look at their target.
        let kind = match entry.file_type() {
            Ok(kind) if kind.is_symlink() => match std::fs::metadata(entry.path()) {
                Ok(target) => target.file_type(),
                Err(e) => {
                    let why = match e.raw_os_error() {
                        Some(libc::ELOOP) => "a symbolic link that loops".to_string(),
                        _ if e.kind() == std::io::ErrorKind::NotFound => {
                            "a broken symbolic link (its target does not exist)".to_string()
                        }
                        _ => format!("a symbolic link that cannot be followed ({e})"),
                    };
                    unreadable.push((below(&name), why));
                    continue;
                }
            },
            Ok(kind) => kind,
            Err(e) => {
                unreadable.push((below(&name), format!("cannot be read ({e})")));
                continue;
            }
        };
        if kind.is_dir() {
            out.push((name, EntryKind::Dir));
        } else if kind.is_file() {
            out.push((name, EntryKind::File));
        } else {
            let what = crate::files::kind_name(kind);
            unreadable.push((below(&name), format!("{what}, not a regular file")));
        }
    }
    out.sort();
    Ok(out)
}

/// Tar's block size: headers and member data start on multiples of it.
const TAR_BLOCK: u64 = 512;

/// Indexes an uncompressed tar: every regular member's path, data offset and size (hard links
/// and symbolic links to regular members read their target's bytes). Every member type that
/// GNU, ustar and pax tar write is either read or reported in `unreadable`; an archive whose
/// members run past its end, or that ends without its end-of-archive block, is an error that
/// says so. A single top folder wrapping the whole tree is stripped.
fn list_tar(path: &Path, flat: bool) -> Result<(File, Listing)> {
    let (file, archive_len) = crate::files::open_regular(path)?;
    let mut magic = [0u8; 2];
    if read_at(&file, 0, 2)
        .map(|m| magic.copy_from_slice(&m))
        .is_ok()
        && magic == [0x1f, 0x8b]
    {
        bail!(
            "{} is gzip-compressed; members are read in place by offset, so decompress it first (gunzip)",
            path.display()
        );
    }
    let mut listing = Listing::default();
    // Member path → (offset, size) of every regular member, for links to find their target.
    let mut regular: BTreeMap<Vec<String>, (u64, u64)> = BTreeMap::new();
    let mut symlinks: Vec<(Vec<String>, PathBuf)> = Vec::new();
    let (mut members, mut end) = (0usize, 0u64);
    {
        let mut archive = tar::Archive::new(&file);
        let entries = archive
            .entries_with_seek()
            .with_context(|| format!("reading {}", path.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| {
                if members == 0 {
                    anyhow!(
                        "{} is not a folder or a tar archive (it does not start with a tar header)",
                        path.display()
                    )
                } else {
                    anyhow!(
                        "{} is a damaged or truncated tar archive: after {members} members, the \
                         next header (near byte {end}) cannot be read: {}",
                        path.display(),
                        printable(&e.to_string())
                    )
                }
            })?;
            members += 1;
            let (offset, size) = (entry.raw_file_position(), entry.size());
            let data_end = offset.checked_add(size).filter(|&e| e <= archive_len);
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let Some(data_end) = data_end else {
                bail!(
                    "{} is truncated: member {members} ({name}) claims {size} bytes at byte \
                     {offset}, but the archive ends at byte {archive_len} ({} members read before it)",
                    path.display(),
                    members - 1
                );
            };
            end = data_end.div_ceil(TAR_BLOCK) * TAR_BLOCK;
            let parts = member_parts(Path::new(&name));
            let kind = entry.header().entry_type();
            use tar::EntryType as T;
            match kind {
                // Metadata for the archive as a whole, not a member.
                T::XGlobalHeader => continue,
                _ if parts.is_empty() => continue,
                T::Directory => listing.dirs.push(parts),
                T::Regular | T::Continuous => {
                    regular.insert(parts.clone(), (offset, size));
                    listing.files.push(Found {
                        parts,
                        offset,
                        size,
                    });
                }
                T::Link => {
                    // GNU tar stores a file's later copies as hard links to its first.
                    let target = entry
                        .link_name_bytes()
                        .map(|t| member_parts(Path::new(&*String::from_utf8_lossy(&t))));
                    match target.as_ref().and_then(|t| regular.get(t)) {
                        Some(&(offset, size)) => listing.files.push(Found {
                            parts,
                            offset,
                            size,
                        }),
                        None => listing.unreadable.push((
                            parts.join("/"),
                            "a hard link to no regular member before it".into(),
                        )),
                    }
                }
                T::Symlink => match entry.link_name_bytes() {
                    Some(t) => symlinks.push((
                        parts,
                        PathBuf::from(String::from_utf8_lossy(&t).into_owned()),
                    )),
                    None => listing
                        .unreadable
                        .push((parts.join("/"), "a symbolic link without a target".into())),
                },
                other => {
                    let what = match other {
                        T::Fifo => "a FIFO".to_string(),
                        T::Char => "a character device".to_string(),
                        T::Block => "a block device".to_string(),
                        T::GNUSparse => "a sparse file (not read from archives)".to_string(),
                        other => format!("a tar member of type {:?}", other.as_byte() as char),
                    };
                    listing
                        .unreadable
                        .push((parts.join("/"), format!("{what}, not a regular file")));
                }
            }
        }
    }
    // A tar ends with zero blocks; reaching the end of the bytes first means it was cut short at
    // a member boundary (the iterator stops quietly there). An empty file is an empty archive.
    if archive_len > 0 && archive_len < end + TAR_BLOCK {
        bail!(
            "{} is truncated: it ends after {members} members without tar's end-of-archive block \
             (a copy or download cut short?)",
            path.display()
        );
    }
    // Symbolic links read their target's bytes when it is a regular member (followed through
    // other links, at most a few deep).
    let links: BTreeMap<Vec<String>, PathBuf> = symlinks.iter().cloned().collect();
    for (parts, _) in symlinks {
        match resolve_tar_link(&parts, &links, &regular) {
            Ok((offset, size)) => listing.files.push(Found {
                parts,
                offset,
                size,
            }),
            Err(why) => listing.unreadable.push((parts.join("/"), why)),
        }
    }
    // `[<top>/]<class>/<image>` (or `[<top>/]<image>` when flat): strip the one top folder.
    let depth = if flat { 1 } else { 2 };
    let images = listing.files.iter().filter(|f| is_image(&f.parts));
    let tops: BTreeSet<&str> = images.clone().map(|f| f.parts[0].as_str()).collect();
    if tops.len() == 1 && images.clone().all(|f| f.parts.len() == depth + 1) {
        let top = tops.into_iter().next().unwrap_or_default().to_string();
        listing
            .files
            .retain(|f| f.parts.len() > 1 && f.parts[0] == top);
        for f in &mut listing.files {
            f.parts.remove(0);
        }
        listing.dirs.retain(|d| d.len() > 1 && d[0] == top);
        for d in &mut listing.dirs {
            d.remove(0);
        }
        for (name, _) in &mut listing.unreadable {
            if let Some(rest) = name.strip_prefix(&format!("{top}/")) {
                *name = rest.to_string();
            }
        }
    }
    Ok((file, listing))
}

/// A member path's normal components (`./a/b` and `a/b` are the same member).
fn member_parts(path: &Path) -> Vec<String> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect()
}

/// The regular member a tar symbolic link at `parts` points to, or why it points to none.
fn resolve_tar_link(
    parts: &[String],
    links: &BTreeMap<Vec<String>, PathBuf>,
    regular: &BTreeMap<Vec<String>, (u64, u64)>,
) -> std::result::Result<(u64, u64), String> {
    let mut at = parts.to_vec();
    for _ in 0..8 {
        let Some(target) = links.get(&at) else {
            return regular.get(&at).copied().ok_or_else(|| {
                format!(
                    "a symbolic link to {}, which is no regular member of the archive",
                    at.join("/")
                )
            });
        };
        if target.is_absolute() {
            return Err(format!(
                "a symbolic link to {}, outside the archive",
                target.display()
            ));
        }
        // Relative to the link's folder, `..` resolved lexically.
        at.pop();
        for c in target.components() {
            match c {
                Component::Normal(s) => at.push(s.to_string_lossy().into_owned()),
                Component::ParentDir => {
                    if at.pop().is_none() {
                        return Err(format!(
                            "a symbolic link to {}, outside the archive",
                            target.display()
                        ));
                    }
                }
                _ => {}
            }
        }
    }
    Err("a symbolic link that loops (or chains more than 8 links)".into())
}

/// A message from a parser made safe to print: control and non-ASCII bytes become `?`, and it
/// is cut to a line.
fn printable(message: &str) -> String {
    let clean: String = message
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(120)
        .collect();
    if message.chars().count() > 120 {
        format!("{clean}...")
    } else {
        clean
    }
}

/// Reads `len` bytes at `offset` without moving a shared cursor, so threads can read one file at
/// once.
pub(super) fn read_at(file: &File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        file.read_exact_at(&mut buf, offset)?;
    }
    #[cfg(windows)]
    {
        use std::os::windows::fs::FileExt;
        let mut done = 0;
        while done < len {
            let n = file.seek_read(&mut buf[done..], offset + done as u64)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            done += n;
        }
    }
    Ok(buf)
}

/// The training and validation parts of a dataset root: `train` or `train.tar`, and `val`,
/// `val.tar`, `test` or `test.tar` (the first present), e.g. ImageNet's `train/` and `val/`, or
/// CIFAR-10's `train.tar` and `test.tar`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Splits {
    pub train: PathBuf,
    pub val: Option<PathBuf>,
}

impl Splits {
    pub fn find(root: impl AsRef<Path>) -> Result<Splits> {
        let root = root.as_ref();
        ensure!(
            root.is_dir(),
            "dataset not found: {} is not a folder",
            root.display()
        );
        let first = |names: &[&str]| names.iter().map(|n| root.join(n)).find(|p| p.exists());
        let train = first(&["train", "train.tar"])
            .ok_or_else(|| anyhow!("{} holds neither train/ nor train.tar", root.display()))?;
        let val = first(&["val", "val.tar", "test", "test.tar"]);
        Ok(Splits { train, val })
    }
}
