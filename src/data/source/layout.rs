//! Arranging what a listing found into a dataset's classes and samples: class folders, or the
//! flat layout with a labels file.

use super::labels::{LabelLine, parse_labels};
use super::listing::{Found, examples, is_image};
use super::{Dataset, OpenOptions, Sample};
use anyhow::{Context, Result, anyhow, bail, ensure};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

impl Dataset {
    /// Turns the listing into classes and samples.
    pub(super) fn arrange(
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
        let mut files = self.top_level_only(images);
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
        let labels = Labels::new(&self.classes, labels_path);
        let paired = lines.first().is_some_and(|l| l.file.is_some());
        self.samples = if paired {
            self.label_by_name(files, &lines, &labels)?
        } else {
            ensure!(
                lines.len() == files.len(),
                "{} has {} labels but {} holds {} images; a plain list labels the images in sorted file-name order, so the counts must match",
                labels_path.display(),
                lines.len(),
                self.path.display(),
                files.len()
            );
            files
                .into_iter()
                .zip(&lines)
                .map(|(f, line)| Ok(sample(f, labels.of(line)?)))
                .collect::<Result<_>>()?
        };
        Ok(())
    }

    /// The images directly in the root of a flat dataset; the others are skipped with a
    /// warning.
    fn top_level_only(&mut self, images: Vec<Found>) -> Vec<Found> {
        let (files, stray): (Vec<Found>, Vec<Found>) =
            images.into_iter().partition(|f| f.parts.len() == 1);
        if !stray.is_empty() {
            let stray: Vec<String> = stray.iter().map(|f| f.parts.join("/")).collect();
            self.warnings.push(format!(
                "{}: skipped {} images in subfolders of a flat dataset, e.g. {}",
                self.path.display(),
                stray.len(),
                examples(&stray)
            ));
        }
        files
    }

    /// `<file> <label>` lines: each names its image, which must be there; images without a
    /// line are skipped with a warning. Samples in file-name order.
    fn label_by_name(
        &mut self,
        files: Vec<Found>,
        lines: &[LabelLine],
        labels: &Labels,
    ) -> Result<Vec<Sample>> {
        let mut by_name: BTreeMap<String, Found> =
            files.into_iter().map(|f| (f.parts[0].clone(), f)).collect();
        let mut labelled = Vec::with_capacity(lines.len());
        for line in lines {
            let file = line.file.as_deref().unwrap_or_default();
            let f = by_name.remove(file).ok_or_else(|| {
                anyhow!(
                    "{}: line {}: no image {} in the dataset",
                    labels.path.display(),
                    line.number,
                    self.member_path(file)
                )
            })?;
            labelled.push((f, labels.of(line)?));
        }
        if let Some(first) = by_name.keys().next() {
            self.warnings.push(format!(
                "{}: skipped {} images that have no line in {}, e.g. {first}",
                self.path.display(),
                by_name.len(),
                labels.path.display()
            ));
        }
        labelled.sort_by(|a, b| a.0.parts.cmp(&b.0.parts));
        Ok(labelled.into_iter().map(|(f, l)| sample(f, l)).collect())
    }
}

/// A listed file as a sample of class `label`.
fn sample(f: Found, label: u32) -> Sample {
    Sample {
        name: f.parts.join("/"),
        label,
        offset: f.offset,
        size: f.size,
    }
}

/// What a labels file's labels mean: a class name, or an index into the classes.
struct Labels<'a> {
    index: BTreeMap<String, u32>,
    classes: usize,
    path: &'a Path,
}

impl<'a> Labels<'a> {
    fn new(classes: &[String], path: &'a Path) -> Self {
        let index = classes
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), i as u32))
            .collect();
        Labels {
            index,
            classes: classes.len(),
            path,
        }
    }

    /// The class of `line`, or an error naming the file and line.
    fn of(&self, line: &LabelLine) -> Result<u32> {
        if let Some(&l) = self.index.get(line.label.as_str()) {
            return Ok(l);
        }
        match line.label.parse::<u32>() {
            Ok(i) if (i as usize) < self.classes => Ok(i),
            Ok(i) => bail!(
                "{}: line {}: label {i} is out of range for {} classes",
                self.path.display(),
                line.number,
                self.classes
            ),
            Err(_) => bail!(
                "{}: line {}: {:?} is not a class name",
                self.path.display(),
                line.number,
                line.label
            ),
        }
    }
}
