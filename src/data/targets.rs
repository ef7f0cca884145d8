//! Targets beside an image folder: `targets.csv` or `targets.json` → named per-image values.
//!
//! In: the image folder's root directory and the image files of a dataset (in sample order).
//! Out: [`super::Field`]s on the dataset, one per target name, so a model output of that name
//! trains on them (regression vectors, boxes, landmarks, multi-label 0/1 vectors).
//!
//! Formats (paths relative to the folder's root, `/`-separated, as `train/cat/001.jpg` or
//! `cat/001.jpg`):
//!
//! - `targets.csv`: a header `file,NAME,NAME,...`, then one row per image. The columns of one
//!   target share its name, in order (`file,box,box,box,box` is a 4-value `box`). Plain
//!   comma-separated values: no quoting, so file names must not contain commas.
//! - `targets.json`: `{"train/cat/001.jpg": {"box": [0.1, 0.2, 0.5, 0.5], "score": 1}, ...}`: per
//!   image, each target a number or a list of numbers.
//!
//! Every image of the dataset needs a row, every target the same width on every row, every
//! value a finite number; errors name the file, the line (CSV) or the image, and what to fix.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{DataError, Dataset, Field};
use crate::io::Kind;

/// A target's name and values.
type Named = (String, Vec<f32>);

/// The targets of an image folder, by image.
#[derive(Debug, Clone, PartialEq)]
pub struct Targets {
    path: PathBuf,
    /// Target names and widths, in column order.
    names: Vec<(String, usize)>,
    /// Per image (relative path), every target's values one after another.
    rows: HashMap<String, Vec<f32>>,
}

/// Reads `dir/targets.csv` or `dir/targets.json` (not both), if there is one.
pub fn read(dir: &Path) -> Result<Option<Targets>, DataError> {
    let (csv, json) = (dir.join("targets.csv"), dir.join("targets.json"));
    match (csv.exists(), json.exists()) {
        (false, false) => Ok(None),
        (true, true) => Err(DataError::new(
            dir,
            "has both targets.csv and targets.json: which one holds the targets?",
        )
        .with_help("keep one of them")),
        (true, false) => read_csv(&csv).map(Some),
        (false, true) => read_json(&json).map(Some),
    }
}

fn text(path: &Path) -> Result<String, DataError> {
    let bytes = crate::io::read_limited(path, Kind::Data)?;
    String::from_utf8(bytes).map_err(|_| DataError::new(path, "is not UTF-8 text"))
}

fn read_csv(path: &Path) -> Result<Targets, DataError> {
    let text = text(path)?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Err(DataError::new(
            path,
            "is empty: expected a header `file,NAME,...`",
        ));
    };
    let cols: Vec<&str> = header.split(',').map(str::trim).collect();
    if cols.first() != Some(&"file") || cols.len() < 2 {
        return Err(DataError::new(
            path,
            format!(
                "line 1: the header must be `file` and then target names, found `{}`",
                crate::diag::escape_controls(header)
            ),
        )
        .with_help("e.g. `file,box,box,box,box` for a 4-value target `box`"));
    }
    let mut names: Vec<(String, usize)> = Vec::new();
    let mut order: Vec<usize> = Vec::new();
    for c in &cols[1..] {
        if c.is_empty() {
            return Err(DataError::new(path, "line 1: a column has no name"));
        }
        match names.iter().position(|(n, _)| n == c) {
            Some(i) => {
                names[i].1 += 1;
                order.push(i);
            }
            None => {
                order.push(names.len());
                names.push((c.to_string(), 1));
            }
        }
    }
    // Column k goes to position offset[target] + (its index among that target's columns).
    let offsets: Vec<usize> = names
        .iter()
        .scan(0, |acc, (_, w)| {
            let o = *acc;
            *acc += w;
            Some(o)
        })
        .collect();
    let width: usize = names.iter().map(|(_, w)| w).sum();
    let mut slot = Vec::with_capacity(order.len());
    let mut seen = vec![0; names.len()];
    for &t in &order {
        slot.push(offsets[t] + seen[t]);
        seen[t] += 1;
    }
    let mut rows = HashMap::new();
    for (i, line) in lines {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        let at = |m: String| DataError::new(path, format!("line {}: {m}", i + 1));
        if cells.len() != cols.len() {
            return Err(at(format!(
                "{} values, but the header has {} columns",
                cells.len(),
                cols.len()
            )));
        }
        let mut values = vec![0f32; width];
        for (k, cell) in cells[1..].iter().enumerate() {
            let v: f32 = cell.parse().map_err(|_| {
                at(format!(
                    "`{}` is not a number (column {})",
                    crate::diag::escape_controls(cell),
                    k + 2
                ))
            })?;
            if !v.is_finite() {
                return Err(at(format!("`{cell}` is not a finite number")));
            }
            values[slot[k]] = v;
        }
        let file = normalize(cells[0]);
        if rows.insert(file.clone(), values).is_some() {
            return Err(at(format!("a second row for `{file}`")));
        }
    }
    Ok(Targets {
        path: path.to_path_buf(),
        names,
        rows,
    })
}

fn read_json(path: &Path) -> Result<Targets, DataError> {
    let text = text(path)?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| DataError::new(path, format!("is not valid JSON: {e}")))?;
    let Some(images) = value.as_object() else {
        return Err(DataError::new(
            path,
            "must be an object of images: {\"train/cat/001.jpg\": {\"box\": [0.1, 0.2]}, ...}",
        ));
    };
    let mut names: Vec<(String, usize)> = Vec::new();
    let mut per: Vec<(String, Vec<Named>)> = Vec::new();
    for (file, targets) in images {
        let bad = |m: String| DataError::new(path, format!("image `{file}`: {m}"));
        let Some(targets) = targets.as_object() else {
            return Err(bad(
                "expected an object of targets, e.g. {\"box\": [0.1, 0.2]}".into(),
            ));
        };
        let mut got = Vec::new();
        for (name, v) in targets {
            let nums: Vec<&serde_json::Value> = match v {
                serde_json::Value::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            let mut values = Vec::with_capacity(nums.len());
            for n in nums {
                let x = n
                    .as_f64()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| bad(format!("`{name}` holds {n}, not a finite number")))?;
                values.push(x as f32);
            }
            match names.iter().find(|(n, _)| n == name) {
                Some((_, w)) if *w != values.len() => {
                    return Err(bad(format!(
                        "`{name}` has {} values, but {w} elsewhere",
                        values.len()
                    )));
                }
                Some(_) => {}
                None => names.push((name.clone(), values.len())),
            }
            got.push((name.clone(), values));
        }
        per.push((normalize(file), got));
    }
    let mut rows = HashMap::new();
    for (file, got) in per {
        let mut values = Vec::new();
        for (name, _) in &names {
            let Some((_, v)) = got.iter().find(|(n, _)| n == name) else {
                return Err(DataError::new(
                    path,
                    format!("image `{file}` has no target `{name}`"),
                ));
            };
            values.extend_from_slice(v);
        }
        rows.insert(file, values);
    }
    Ok(Targets {
        path: path.to_path_buf(),
        names,
        rows,
    })
}

/// `./a\b` and `a/b` name the same image.
fn normalize(file: &str) -> String {
    file.trim()
        .replace('\\', "/")
        .trim_start_matches("./")
        .to_string()
}

impl Targets {
    /// Adds the targets of `files` (the dataset's images in sample order, under `root`) to
    /// `ds` as fields.
    pub fn attach(
        &self,
        root: &Path,
        ds: &mut Dataset,
        files: &[PathBuf],
    ) -> Result<(), DataError> {
        let width: usize = self.names.iter().map(|(_, w)| w).sum();
        let mut all = Vec::with_capacity(files.len() * width);
        for f in files {
            let rel = f.strip_prefix(root).unwrap_or(f);
            let key = normalize(&rel.to_string_lossy());
            let Some(values) = self.rows.get(&key) else {
                return Err(DataError::new(
                    &self.path,
                    format!("has no row for the image `{key}`"),
                )
                .with_help("give every image of the folder a row (paths relative to the folder)"));
            };
            all.extend_from_slice(values);
        }
        let mut offset = 0;
        for (name, w) in &self.names {
            let values = all
                .chunks(width.max(1))
                .flat_map(|row| row[offset..offset + w].iter().copied())
                .collect();
            ds.fields.push(Field {
                name: name.clone(),
                shape: vec![*w],
                values,
                source: self.path.display().to_string(),
            });
            offset += w;
        }
        Ok(())
    }
}
