//! Checked values of the command line's numeric flags (clap value parsers).
//!
//! In: a flag's text. Out: the value, or a message saying what is expected; clap prints it
//! as `error: invalid value 'X' for '--flag <FLAG>': <message>` and exits with 2 (a usage
//! error), before anything is loaded. The bounds are the spec's settings' (`batch` and
//! `epochs` positive and at most 2^31, a learning rate finite and not negative) and the
//! runtime's (threads: [`crate::runtime::pool::max_threads`]).

use crate::runtime::pool;

/// The largest batch size or epoch count, as in the spec (`elab`'s sizes).
pub const MAX_SIZE: u64 = 1 << 31;

/// The most timed or warm-up runs of `netc bench`.
pub const MAX_ITERS: u64 = 1_000_000;

fn whole(s: &str) -> Result<u64, String> {
    let t = s.trim();
    t.parse::<u64>().map_err(|_| {
        if t.starts_with('-') {
            "expected a whole number, not a negative one".to_string()
        } else {
            "expected a whole number".to_string()
        }
    })
}

fn in_range(s: &str, lo: u64, hi: u64, what: &str) -> Result<usize, String> {
    let v = whole(s)?;
    if v < lo || v > hi {
        return Err(format!("{what} must be from {lo} to {hi}, found {v}"));
    }
    usize::try_from(v).map_err(|_| format!("{what} {v} is too large for this machine"))
}

/// `--batch`: 1 to 2^31 (the spec's `batch` is checked the same way).
pub fn batch(s: &str) -> Result<usize, String> {
    in_range(s, 1, MAX_SIZE, "the batch size")
}

/// `--epochs`: 1 to 2^31.
pub fn epochs(s: &str) -> Result<usize, String> {
    in_range(s, 1, MAX_SIZE, "the number of epochs")
}

/// `--max-steps`: at least 1.
pub fn steps(s: &str) -> Result<u64, String> {
    match whole(s)? {
        0 => Err("the number of steps must be at least 1".to_string()),
        v => Ok(v),
    }
}

/// `--iters` of `netc bench`: 1 to [`MAX_ITERS`].
pub fn iters(s: &str) -> Result<usize, String> {
    in_range(s, 1, MAX_ITERS, "the number of timed runs")
}

/// `--warmup` of `netc bench`: 0 to [`MAX_ITERS`].
pub fn warmup(s: &str) -> Result<usize, String> {
    in_range(s, 0, MAX_ITERS, "the number of warm-up runs")
}

/// `--threads`: 1 to [`pool::max_threads`] (4 × the cores, at most 256).
pub fn threads(s: &str) -> Result<usize, String> {
    let v = whole(s)?;
    pool::check_threads(usize::try_from(v).unwrap_or(usize::MAX))
}

fn number(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| "expected a number such as 0.01 or 1e-3".to_string())?;
    if !v.is_finite() {
        return Err(format!("expected a finite number, found {v}"));
    }
    Ok(v)
}

/// `--lr`: a finite number, not negative (as the spec's `lr`).
pub fn lr(s: &str) -> Result<f64, String> {
    let v = number(s)?;
    if v < 0.0 {
        return Err(format!("the learning rate must not be negative, found {v}"));
    }
    Ok(v)
}

/// One value of `--mean`: a finite number.
pub fn mean(s: &str) -> Result<f64, String> {
    number(s)
}

/// One value of `--std`: a finite number that is not zero (normalization divides by it).
pub fn std(s: &str) -> Result<f64, String> {
    let v = number(s)?;
    if v as f32 == 0.0 {
        return Err(format!(
            "a std of {v}: normalization divides by it, so it must not be zero"
        ));
    }
    Ok(v)
}

/// `--identities TRAIN/EVAL`, e.g. `0-6/7-9`.
pub fn identities(s: &str) -> Result<crate::verify::IdentitySplit, String> {
    crate::verify::IdentitySplit::parse(s)
}

/// `--mining batch-hard|semi-hard|random`.
pub fn mining(s: &str) -> Result<crate::verify::Mining, String> {
    s.parse()
}

/// `--augment`'s text and its augmentations, checked without the model (the shape checks,
/// such as PCA lighting's 3 channels, run again once the spec is loaded:
/// [`AugmentArg::for_input`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AugmentArg {
    pub text: String,
    pub list: Vec<crate::train_config::Augment>,
}

impl AugmentArg {
    /// The list checked against the model input's `shape`; errors are rendered diagnostics
    /// pointing into the flag's text.
    pub fn for_input(&self, shape: &[usize]) -> Result<Vec<crate::train_config::Augment>, String> {
        if self.list.is_empty() {
            return Ok(Vec::new());
        }
        crate::elab::augment_from_text(&self.text, Some(shape))
    }
}

/// `--augment`: the spec's list syntax (`mirror, random_crop(pad=4)`, brackets optional), or
/// `none` (or nothing) for no augmentation. The message is the rendered diagnostic, which
/// names `--augment` and the column.
pub fn augment(s: &str) -> Result<AugmentArg, String> {
    let t = s.trim();
    if t.is_empty() || t == "none" || t == "[]" {
        return Ok(AugmentArg {
            text: String::new(),
            list: Vec::new(),
        });
    }
    let list =
        crate::elab::augment_from_text(s, None).map_err(|e| format!("\n{}", e.trim_end()))?;
    Ok(AugmentArg {
        text: s.to_string(),
        list,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert!(
            batch("0")
                .unwrap_err()
                .contains("from 1 to 2147483648, found 0")
        );
        assert_eq!(batch("64"), Ok(64));
        assert!(batch("-1").unwrap_err().contains("negative"));
        assert!(epochs("4294967296").is_err());
        assert!(steps("0").is_err());
        assert!(iters("0").is_err() && iters("1000001").is_err());
        assert_eq!(warmup("0"), Ok(0));
        for bad in ["nan", "inf", "-inf", "-1", "x"] {
            assert!(lr(bad).is_err(), "{bad}");
        }
        assert_eq!(lr("0"), Ok(0.0));
        assert!(std("0").is_err() && std("1e-50").is_err() && mean("nan").is_err());
        assert!(
            threads("18446744073709551615")
                .unwrap_err()
                .contains("limit of")
        );
        assert!(threads("0").is_err());
        assert_eq!(threads("1"), Ok(1));
    }

    #[test]
    fn augment_lists() {
        for none in ["", " none ", "[]"] {
            assert_eq!(augment(none).unwrap().list, vec![]);
        }
        let a = augment("[mirror, vflip(1)]").unwrap();
        assert_eq!(a.list.len(), 2);
        assert_eq!(augment("mirror, vflip(1)").unwrap().list, a.list);
        let e = augment("mirror, vflip(2)").unwrap_err();
        assert!(
            e.contains("--augment:1:15") && e.contains("probability"),
            "{e}"
        );
        // The shape checks wait for the model.
        let p = augment("pca_lighting").unwrap();
        assert!(p.for_input(&[3, 8, 8]).is_ok());
        assert!(
            p.for_input(&[1, 8, 8])
                .unwrap_err()
                .contains("needs 3 channels")
        );
    }
}
