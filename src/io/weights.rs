//! A model's parameter and buffer values: load and save safetensors, seeded initialization.
//!
//! In: a [`LayerGraph`] (its `params` table: PyTorch `state_dict` paths, shapes, dtypes, fixed
//! values) and a safetensors file, or a seed. Out: [`Weights`], one [`Value`] per
//! `LayerGraph::params` entry, at the same index.
//!
//! Loading matches tensors by parameter path, as `model.load_state_dict(strict=True)` does,
//! and reports every problem at once: missing and unexpected tensors (with "did you mean"
//! hints, and detection of a common prefix such as DataParallel's `module.`), wrong shapes and
//! wrong dtypes. Float parameters are read from F32, or converted to f32 from F64, F16 and
//! BF16; `num_batches_tracked` may be I64 or I32, or absent (then 0, as PyTorch's
//! `load_state_dict` of old checkpoints does). Parameters given inline in the spec
//! (`ParamInfo::fixed`) come from the spec; a file may contain them too, but then its values
//! must equal the spec's.
//!
//! [`Weights::load_reinit`] is the transfer-learning load: the parameters under the given
//! module paths (`fc`) are initialized afresh and the file's tensors under them are not used
//! (a head of another class count); everything else is matched as strictly as by `load`.
//!
//! Saving writes safetensors with the parameter paths as keys (`num_batches_tracked` as I64), in
//! the form `safetensors.torch.load_file` + `load_state_dict` accept, atomically (see
//! [`super::write_atomic`]).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, TensorView, View};

use super::{IoError, Kind, read_limited, show_shape, write_atomic};
use crate::diag::suggest;
use crate::layer_graph::{DType, LayerGraph, Op, ParamInfo, ParamKind};

/// Rewrites a serialized file's header with its keys sorted. safetensors writes the
/// `__metadata__` map in a `HashMap`'s order, which changes from run to run; sorted, the same
/// tensors and metadata always give the same bytes. The header keeps its length (the same
/// entries in another order), so the data offsets stay valid; readers find tensors by offset.
fn sorted_header(mut bytes: Vec<u8>) -> Result<Vec<u8>, SafeTensorError> {
    use std::collections::BTreeMap;
    let n = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()) as usize)
        .filter(|&n| bytes.len() >= 8 + n)
        .ok_or(SafeTensorError::HeaderTooSmall)?;
    let mut header: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + n])
        .map_err(SafeTensorError::InvalidHeaderDeserialization)?;
    if let Some(serde_json::Value::Object(m)) = header.get("__metadata__") {
        // Explicitly sorted, whatever order serde_json's maps keep.
        let sorted: BTreeMap<&String, &serde_json::Value> = m.iter().collect();
        let v =
            serde_json::to_value(sorted).map_err(SafeTensorError::InvalidHeaderDeserialization)?;
        header.insert("__metadata__".to_string(), v);
    }
    let mut text =
        serde_json::to_vec(&header).map_err(SafeTensorError::InvalidHeaderDeserialization)?;
    text.resize(n.max(text.len()).next_multiple_of(8), b' ');
    if text.len() == n {
        bytes[8..8 + n].copy_from_slice(&text);
        return Ok(bytes);
    }
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - n);
    out.extend((text.len() as u64).to_le_bytes());
    out.extend(text);
    out.extend(&bytes[8 + n..]);
    Ok(out)
}

/// Tensors under this prefix in a safetensors file are a training checkpoint's optimizer
/// state: loading weights skips them.
pub const CHECKPOINT_PREFIX: &str = "optimizer.";

/// The value of one parameter or buffer.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    F32(ArrayD<f32>),
    /// `num_batches_tracked`.
    I64(ArrayD<i64>),
}

impl Value {
    pub fn shape(&self) -> &[usize] {
        match self {
            Value::F32(a) => a.shape(),
            Value::I64(a) => a.shape(),
        }
    }
    pub fn dtype(&self) -> DType {
        match self {
            Value::F32(_) => DType::F32,
            Value::I64(_) => DType::I64,
        }
    }
    pub fn as_f32(&self) -> Option<&ArrayD<f32>> {
        match self {
            Value::F32(a) => Some(a),
            Value::I64(_) => None,
        }
    }
    pub fn as_i64(&self) -> Option<&ArrayD<i64>> {
        match self {
            Value::I64(a) => Some(a),
            Value::F32(_) => None,
        }
    }
}

/// A tensor's name and shape.
pub type Named = (String, Vec<usize>);

/// The values of all of a model's parameters and buffers, indexed like `LayerGraph::params`.
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    pub values: Vec<Value>,
}

impl Weights {
    /// The value of the parameter with this path (`layer1.0.bn1.running_mean`).
    pub fn get(&self, g: &LayerGraph, path: &str) -> Option<&Value> {
        let i = g.params.iter().position(|p| p.path == path)?;
        self.values.get(i)
    }

    /// Loads a safetensors file and checks it against the model's parameter table.
    pub fn load(path: impl AsRef<Path>, g: &LayerGraph) -> Result<Weights, IoError> {
        let path = path.as_ref();
        let bytes = read_limited(path, Kind::Weights)?;
        if let Some(msg) = sniff_other_format(&bytes) {
            return Err(IoError::new(path, msg));
        }
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| IoError::new(path, explain_format_error(&bytes, &e)))?;
        match_tensors(g, &st)
            .map_err(|(message, details)| IoError::new(path, message).with_details(details))
    }

    /// Loads like [`Weights::load`], except that the parameters at `reinit` indices take their
    /// values from `Weights::init(g, seed)` and the file's tensors of those paths are not
    /// used (they may be absent or of another shape, as a 1000-class head when the model has
    /// 3 classes). Every other parameter must be in the file with its shape. Also returns
    /// the file's tensors that were not used, with their shapes, for the caller to list.
    pub fn load_reinit(
        path: impl AsRef<Path>,
        g: &LayerGraph,
        reinit: &[usize],
        seed: u64,
    ) -> Result<(Weights, Vec<Named>), IoError> {
        let path = path.as_ref();
        let bytes = read_limited(path, Kind::Weights)?;
        if let Some(msg) = sniff_other_format(&bytes) {
            return Err(IoError::new(path, msg));
        }
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| IoError::new(path, explain_format_error(&bytes, &e)))?;
        let skip: HashSet<&str> = reinit.iter().map(|&i| g.params[i].path.as_str()).collect();
        let mut w = match_tensors_skipping(g, &st, &skip)
            .map_err(|(message, details)| IoError::new(path, message).with_details(details))?;
        let fresh = Weights::init(g, seed);
        for &i in reinit {
            w.values[i] = fresh.values[i].clone();
        }
        let mut unused: Vec<Named> = st
            .iter()
            .filter(|(name, _)| skip.contains(name))
            .map(|(name, v)| (name.to_string(), v.shape().to_vec()))
            .collect();
        unused.sort();
        Ok((w, unused))
    }

    /// Saves as safetensors keyed by parameter path, atomically. Fails (writing nothing) if
    /// the values do not fit the model's parameter table.
    pub fn save(&self, path: impl AsRef<Path>, g: &LayerGraph) -> Result<(), IoError> {
        self.save_with(path, g, Vec::new(), HashMap::new())
    }

    /// Saves like [`Weights::save`], with extra tensors (a training checkpoint's optimizer
    /// state, under names starting with `optimizer.`, which [`Weights::load`] skips) and extra
    /// metadata entries, in the same atomic write.
    pub fn save_with(
        &self,
        path: impl AsRef<Path>,
        g: &LayerGraph,
        extra: Vec<(String, Value)>,
        metadata: HashMap<String, String>,
    ) -> Result<(), IoError> {
        let path = path.as_ref();
        let mut problems = Vec::new();
        if self.values.len() != g.params.len() {
            problems.push(format!(
                "{} values for {} parameters",
                self.values.len(),
                g.params.len()
            ));
        }
        for (p, v) in g.params.iter().zip(&self.values) {
            if v.dtype() != p.dtype || v.shape() != p.shape.as_slice() {
                problems.push(format!(
                    "`{}`: the model needs {:?} {}, the value is {:?} {}",
                    p.path,
                    p.dtype,
                    show_shape(&p.shape),
                    v.dtype(),
                    show_shape(v.shape())
                ));
            }
        }
        if !problems.is_empty() {
            return Err(IoError::new(
                path,
                format!("cannot save: the weights do not fit model `{}`", g.name),
            )
            .with_details(problems));
        }
        let tensors = g
            .params
            .iter()
            .zip(&self.values)
            .map(|(p, v)| (p.path.as_str(), Out(v)))
            .chain(extra.iter().map(|(n, v)| (n.as_str(), Out(v))));
        let mut meta = metadata;
        meta.insert("format".to_string(), "pt".to_string());
        let bytes = safetensors::serialize(tensors, Some(meta))
            .and_then(sorted_header)
            .map_err(|e| IoError::new(path, format!("cannot save: {e}")))?;
        write_atomic(path, |w| std::io::Write::write_all(w, &bytes))
    }

    /// Seeded initialization, for running a model without trained weights.
    ///
    /// - Convolution and dense weights: He (Kaiming) normal with fan-in, `N(0, 2 / fan_in)`
    ///   where `fan_in = in_channels / groups × kh × kw` (or `in_features`). This keeps the
    ///   scale of activations about constant through ReLU layers, so an untrained deep model
    ///   (VGG16 has no batchnorm) produces outputs of ordinary magnitude. PyTorch's default
    ///   (`kaiming_uniform(a=√5)`, variance `1 / (3 fan_in)`) shrinks the signal's variance
    ///   about 6× per ReLU layer: outputs of deep models collapse towards zero and into
    ///   subnormal floats, which makes timings unrepresentative and comparisons meaningless.
    /// - Biases: zero (the usual companion of He init).
    /// - Batchnorm: weight 1, bias 0, `running_mean` 0, `running_var` 1,
    ///   `num_batches_tracked` 0 (PyTorch's defaults). Other 1-d weights: 1.
    /// - Fixed (inline) parameters: the spec's values.
    ///
    /// Each parameter draws from its own stream, seeded from `seed` and its path, so a layer's
    /// values do not change when other layers are added or removed. The generator is
    /// xoshiro256** seeded with splitmix64; normals come from Box–Muller in f64, rounded to
    /// f32. The same seed gives bit-identical weights (across platforms too, barring a libm
    /// whose `ln`/`cos` differ by an ulp and happen to change an f32 rounding).
    pub fn init(g: &LayerGraph, seed: u64) -> Weights {
        let mut op_of: Vec<Option<&Op>> = vec![None; g.params.len()];
        for n in &g.nodes {
            for &p in &n.params {
                if let Some(slot) = op_of.get_mut(p) {
                    slot.get_or_insert(&n.op);
                }
            }
        }
        let values = g
            .params
            .iter()
            .zip(op_of)
            .map(|(p, op)| init_param(p, op, seed))
            .collect();
        Weights { values }
    }
}

fn init_param(p: &ParamInfo, op: Option<&Op>, seed: u64) -> Value {
    let shape = IxDyn(&p.shape);
    let n = p.numel();
    if p.dtype == DType::I64 {
        return Value::I64(ArrayD::zeros(shape));
    }
    if let Some(f) = &p.fixed
        && f.len() == n
    {
        return Value::F32(ArrayD::from_shape_vec(shape, f.clone()).expect("numel checked"));
    }
    let fill = |x: f32| Value::F32(ArrayD::from_elem(shape.clone(), x));
    match p.kind {
        ParamKind::Bias | ParamKind::RunningMean | ParamKind::NumBatchesTracked => fill(0.0),
        ParamKind::RunningVar => fill(1.0),
        ParamKind::Weight => {
            let random = matches!(op, Some(Op::Conv2d { .. } | Op::Dense { .. }))
                || (op.is_none() && p.shape.len() >= 2);
            if !random || matches!(op, Some(Op::BatchNorm { .. })) {
                return fill(1.0);
            }
            let fan_in: usize = p.shape.iter().skip(1).product::<usize>().max(1);
            let std = (2.0 / fan_in as f64).sqrt();
            let mut rng = Normal::new(stream_seed(seed, &p.path));
            let v: Vec<f32> = (0..n).map(|_| (rng.next() * std) as f32).collect();
            Value::F32(ArrayD::from_shape_vec(shape, v).expect("numel checked"))
        }
    }
}

/// Mixes the seed with the parameter's path (FNV-1a) into one stream seed.
fn stream_seed(seed: u64, path: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut s = seed;
    splitmix64(&mut s) ^ h
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// xoshiro256** (Blackman & Vigna), state filled by splitmix64.
struct Xoshiro256 {
    s: [u64; 4],
}

impl Xoshiro256 {
    fn new(seed: u64) -> Xoshiro256 {
        let mut x = seed;
        Xoshiro256 {
            s: [
                splitmix64(&mut x),
                splitmix64(&mut x),
                splitmix64(&mut x),
                splitmix64(&mut x),
            ],
        }
    }
    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }
    /// Uniform in [0, 1) with 53 random bits.
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Standard normals by Box–Muller, two per pair of uniforms.
struct Normal {
    rng: Xoshiro256,
    spare: Option<f64>,
}

impl Normal {
    fn new(seed: u64) -> Normal {
        Normal {
            rng: Xoshiro256::new(seed),
            spare: None,
        }
    }
    fn next(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let u1 = 1.0 - self.rng.uniform(); // (0, 1]: ln is finite
        let u2 = self.rng.uniform();
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
        self.spare = Some(r * s);
        r * c
    }
}

/// A value as a safetensors tensor to write.
struct Out<'a>(&'a Value);

impl View for Out<'_> {
    fn dtype(&self) -> Dtype {
        match self.0 {
            Value::F32(_) => Dtype::F32,
            Value::I64(_) => Dtype::I64,
        }
    }
    fn shape(&self) -> &[usize] {
        self.0.shape()
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        let mut out = Vec::with_capacity(self.data_len());
        match self.0 {
            Value::F32(a) => a
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Value::I64(a) => a
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        }
        out.into()
    }
    fn data_len(&self) -> usize {
        match self.0 {
            Value::F32(a) => a.len() * 4,
            Value::I64(a) => a.len() * 8,
        }
    }
}

/// Recognizes files people commonly pass by mistake, to say what they are.
fn sniff_other_format(bytes: &[u8]) -> Option<String> {
    let convert = "convert it in Python: `from safetensors.torch import save_file; \
                   save_file(model.state_dict(), 'weights.safetensors')`";
    if bytes.is_empty() {
        return Some("not a safetensors file: the file is empty".into());
    }
    if bytes.starts_with(b"PK\x03\x04") {
        return Some(format!(
            "not a safetensors file: it is a zip archive, probably a PyTorch checkpoint \
             (`torch.save`, .pt/.pth); {convert}"
        ));
    }
    // A safetensors header length can start with these bytes too (640 bytes is 0x80, 0x02):
    // its JSON header then starts at byte 8.
    if bytes[0] == 0x80
        && bytes.get(1).is_some_and(|&v| (2..=5).contains(&v))
        && bytes.get(8) != Some(&b'{')
    {
        return Some(format!(
            "not a safetensors file: it is a Python pickle, probably a legacy PyTorch \
             checkpoint; {convert}"
        ));
    }
    if bytes.starts_with(b"\x93NUMPY") {
        return Some("not a safetensors file: it is a NumPy .npy array".into());
    }
    if bytes.starts_with(b"\x89HDF\r\n\x1a\n") {
        return Some("not a safetensors file: it is an HDF5 file (Keras?)".into());
    }
    if bytes.starts_with(b"\x08") && bytes.len() > 8 && bytes[8] != b'{' {
        // ONNX protobufs start with field 1 (ir_version), tag 0x08.
        return Some("not a safetensors file: it looks like an ONNX model".into());
    }
    None
}

/// Explains why the safetensors parser refused the file: not safetensors at all, truncated,
/// or corrupt.
fn explain_format_error(bytes: &[u8], e: &SafeTensorError) -> String {
    let not_st =
        "not a safetensors file (it does not start with a header length and a JSON header)";
    let Some(len8) = bytes.get(..8) else {
        return format!("not a safetensors file: only {} bytes long", bytes.len());
    };
    let n = u64::from_le_bytes(len8.try_into().unwrap_or([0; 8]));
    let rest = (bytes.len() - 8) as u64;
    let json_start = bytes.get(8) == Some(&b'{');
    if !json_start {
        return not_st.into();
    }
    if n > rest {
        return format!(
            "truncated: the header alone should be {n} bytes, but the file has {} bytes \
             (an interrupted download or copy?)",
            bytes.len()
        );
    }
    let header = &bytes[8..8 + n as usize];
    let Ok(text) = std::str::from_utf8(header) else {
        return "corrupt safetensors header: not UTF-8".into();
    };
    let json: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(err) => return format!("corrupt safetensors header: {err}"),
    };
    if matches!(e, SafeTensorError::MetadataIncompleteBuffer) {
        // How much data the header describes, against how much the file has.
        let end = json
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(_, v)| v.get("data_offsets")?.get(1)?.as_u64())
            .max()
            .unwrap_or(0);
        let have = rest - n;
        if have < end {
            return format!(
                "truncated: the header describes {end} bytes of tensor data, but the file has \
                 {have} (an interrupted download or copy?)"
            );
        }
        return format!(
            "corrupt safetensors file: {} bytes after the {end} bytes of tensor data the \
             header describes",
            have - end
        );
    }
    format!("corrupt safetensors file: {e}")
}

/// How a stored dtype is read.
fn dtype_name(d: Dtype) -> String {
    format!("{d:?}")
}

fn read_f32(v: &TensorView<'_>) -> Option<Vec<f32>> {
    let d = v.data();
    Some(match v.dtype() {
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F64 => d
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        Dtype::F16 => d
            .chunks_exact(2)
            .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        Dtype::BF16 => d
            .chunks_exact(2)
            .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
            .collect(),
        _ => return None,
    })
}

fn read_i64(v: &TensorView<'_>) -> Option<Vec<i64>> {
    let d = v.data();
    Some(match v.dtype() {
        Dtype::I64 => d
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect(),
        Dtype::I32 => d
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
            .collect(),
        _ => return None,
    })
}

/// IEEE half precision to single, exactly (every f16 is representable as f32).
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: value m × 2^-24, normalized.
            let lz = m.leading_zeros() - 22; // zeros within the 10-bit field
            let m = (m << (lz + 1)) & 0x3ff;
            let e = 127 - 15 - lz;
            sign | (e << 23) | (m << 13)
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

type Problems = (String, Vec<String>);

/// The parameter indices `--reinit` names pick: each name is a module path (`fc`,
/// `layer4.1`) or a parameter path (`fc.weight`), taking every parameter at or under it. A
/// name that picks nothing is an error naming the flag, with the nearest module paths.
pub fn select_reinit(g: &LayerGraph, names: &[String]) -> Result<Vec<usize>, String> {
    let mut picked: Vec<usize> = Vec::new();
    for name in names {
        let name = name.trim().trim_end_matches('.');
        let under = |p: &str| p == name || p.strip_prefix(name).is_some_and(|r| r.starts_with('.'));
        let these: Vec<usize> = (0..g.params.len())
            .filter(|&i| under(&g.params[i].path))
            .collect();
        if these.is_empty() {
            let modules = g.module_paths();
            let mut near: Vec<&str> = Vec::new();
            if let Some(h) = suggest(name, modules.iter().map(String::as_str)) {
                near.push(h);
            }
            // The last module with parameters: usually the head to replace.
            if let Some(last) = modules.last().filter(|m| !near.contains(&m.as_str())) {
                near.push(last);
            }
            let near: Vec<String> = near.iter().map(|n| format!("`{n}`")).collect();
            return Err(format!(
                "--reinit {}: matches no parameter of model `{}`\n  help: give module paths \
                 as `netc summary` prints them{}",
                crate::diag::escape_controls(name),
                g.name,
                if near.is_empty() {
                    String::new()
                } else {
                    format!(", e.g. {}", near.join(" or "))
                }
            ));
        }
        for i in these {
            if !picked.contains(&i) {
                picked.push(i);
            }
        }
    }
    picked.sort_unstable();
    Ok(picked)
}

/// Matches the file's tensors to the model's parameters, collecting every problem.
fn match_tensors(g: &LayerGraph, st: &SafeTensors<'_>) -> Result<Weights, Problems> {
    match_tensors_skipping(g, st, &HashSet::new())
}

/// [`match_tensors`], ignoring the parameters at `skip` paths and the file's tensors of
/// those names (their values are zeros: the caller fills them).
fn match_tensors_skipping(
    g: &LayerGraph,
    st: &SafeTensors<'_>,
    skip: &HashSet<&str>,
) -> Result<Weights, Problems> {
    let expected: HashSet<&str> = g.params.iter().map(|p| p.path.as_str()).collect();
    let mut values = Vec::with_capacity(g.params.len());
    let mut missing: Vec<&ParamInfo> = Vec::new();
    let mut wrong_shape = Vec::new();
    let mut wrong_dtype = Vec::new();
    let mut wrong_fixed = Vec::new();
    let mut found = 0usize;
    for p in &g.params {
        if skip.contains(p.path.as_str()) {
            values.push(match p.dtype {
                DType::F32 => Value::F32(ArrayD::zeros(IxDyn(&p.shape))),
                DType::I64 => Value::I64(ArrayD::zeros(IxDyn(&p.shape))),
            });
            continue;
        }
        let view = match st.tensor(&p.path) {
            Ok(v) => v,
            Err(_) => {
                if p.kind == ParamKind::NumBatchesTracked {
                    values.push(Value::I64(ArrayD::zeros(IxDyn(&p.shape))));
                } else if let Some(f) = &p.fixed {
                    values.push(Value::F32(
                        ArrayD::from_shape_vec(IxDyn(&p.shape), f.clone())
                            .unwrap_or_else(|_| ArrayD::zeros(IxDyn(&p.shape))),
                    ));
                } else {
                    missing.push(p);
                }
                continue;
            }
        };
        found += 1;
        let mut ok = true;
        if view.shape() != p.shape.as_slice() {
            wrong_shape.push(format!(
                "wrong shape `{}`: the model needs {}, the file has {}",
                p.path,
                show_shape(&p.shape),
                show_shape(view.shape())
            ));
            ok = false;
        }
        let value = match p.dtype {
            DType::F32 => read_f32(&view).map(|v| Value::F32(to_array(&p.shape, v))),
            DType::I64 => read_i64(&view).map(|v| Value::I64(to_array(&p.shape, v))),
        };
        let Some(value) = value else {
            let accepted = match p.dtype {
                DType::F32 => "F32 (F64, F16 and BF16 are converted)",
                DType::I64 => "I64 (or I32)",
            };
            wrong_dtype.push(format!(
                "wrong dtype `{}`: the model needs {accepted}, the file has {}",
                p.path,
                dtype_name(view.dtype())
            ));
            continue;
        };
        if !ok {
            continue;
        }
        if let (Some(f), Value::F32(a)) = (&p.fixed, &value)
            && let Some((i, (&spec, &file))) = f
                .iter()
                .zip(a.iter())
                .enumerate()
                .find(|(_, (s, v))| s != v)
        {
            wrong_fixed.push(format!(
                "differs from the spec `{}`: the spec gives this parameter inline; \
                 element {} is {} in the spec but {} in the file",
                p.path,
                show_index(&p.shape, i),
                spec,
                file
            ));
            continue;
        }
        values.push(value);
    }
    let mut unexpected: Vec<(&str, Vec<usize>)> = st
        .iter()
        .filter(|(name, _)| {
            !expected.contains(name) && !skip.contains(name) && !name.starts_with(CHECKPOINT_PREFIX)
        })
        .map(|(name, v)| (name, v.shape().to_vec()))
        .collect();
    unexpected.sort();

    if missing.is_empty()
        && unexpected.is_empty()
        && wrong_shape.is_empty()
        && wrong_dtype.is_empty()
        && wrong_fixed.is_empty()
    {
        return Ok(Weights { values });
    }

    let missing_names: Vec<&str> = missing.iter().map(|p| p.path.as_str()).collect();
    let unexpected_names: Vec<&str> = unexpected.iter().map(|(n, _)| *n).collect();
    let prefix = common_prefix(&unexpected_names, &missing_names);

    let mut details = Vec::new();
    for p in &missing {
        details.push(format!("missing `{}` {}", p.path, show_shape(&p.shape)));
    }
    // Hints only point at a missing tensor of the same shape: a name that is merely similar
    // (`conv1.bias` and `bn1.bias` of another model) would mislead.
    let missing_shape: HashMap<&str, &[usize]> = missing
        .iter()
        .map(|p| (p.path.as_str(), p.shape.as_slice()))
        .collect();
    for (name, shape) in &unexpected {
        let fits = |n: &str| missing_shape.get(n) == Some(&shape.as_slice());
        let by_prefix = match &prefix {
            Some(Prefix::Extra(px, _)) => name
                .strip_prefix(px.as_str())
                .filter(|n| fits(n))
                .map(str::to_string),
            Some(Prefix::Lacking(px, _)) => Some(format!("{px}{name}")).filter(|n| fits(n)),
            None => None,
        };
        let hint = by_prefix.or_else(|| {
            suggest(name, missing_names.iter().copied().filter(|n| fits(n))).map(str::to_string)
        });
        let hint = hint
            .map(|h| format!(" (did you mean `{h}`?)"))
            .unwrap_or_default();
        details.push(format!("unexpected `{name}` {}{hint}", show_shape(shape)));
    }
    details.extend(wrong_shape.iter().cloned());
    details.extend(wrong_dtype.iter().cloned());
    details.extend(wrong_fixed.iter().cloned());
    match &prefix {
        Some(Prefix::Extra(px, count)) => {
            let origin = match px.as_str() {
                "module." => {
                    " (saved from a model wrapped in nn.DataParallel or DistributedDataParallel?)"
                }
                "model." => " (saved from a wrapper that holds the model as `self.model`?)",
                _ => "",
            };
            details.push(format!(
                "help: {count} of the file's names are the model's names with the prefix `{px}`{origin}; \
                 strip it: `{{k.removeprefix('{px}'): v for k, v in state_dict.items()}}`"
            ));
        }
        Some(Prefix::Lacking(px, count)) => details.push(format!(
            "help: {count} of the model's names are the file's names with the prefix `{px}`; \
             add it: `{{'{px}' + k: v for k, v in state_dict.items()}}`"
        )),
        None => {}
    }
    // Few names in common and no prefix to explain it: probably another model's file.
    let needed = g.params.len() - g.params.iter().filter(|p| p.fixed.is_some()).count();
    if prefix.is_none() && !unexpected.is_empty() && found * 2 < needed {
        let (found, verb) = match found {
            0 => ("none".to_string(), "are"),
            1 => ("only 1".to_string(), "is"),
            n => (format!("only {n}"), "are"),
        };
        details.push(format!(
            "note: {found} of the model's {needed} tensors {verb} in the file: are these the \
             weights of another model than `{}`?",
            g.name
        ));
    }

    let mut parts = Vec::new();
    let mut count = |n: usize, what: &str| {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    };
    count(missing.len(), "missing");
    count(unexpected.len(), "unexpected");
    count(wrong_shape.len(), "with the wrong shape");
    count(wrong_dtype.len(), "with the wrong dtype");
    count(wrong_fixed.len(), "differing from the spec");
    Err((
        format!(
            "the weights do not fit model `{}`: {}",
            g.name,
            parts.join(", ")
        ),
        details,
    ))
}

fn to_array<T: Clone + Default>(shape: &[usize], v: Vec<T>) -> ArrayD<T> {
    // On a shape mismatch (already reported) any array will do; it is never returned.
    ArrayD::from_shape_vec(IxDyn(shape), v).unwrap_or_else(|_| ArrayD::default(IxDyn(&[0])))
}

/// Flat index → `[i, j, k]` in a C-order array of `shape`.
fn show_index(shape: &[usize], mut i: usize) -> String {
    let mut idx = vec![0; shape.len()];
    for (k, &d) in shape.iter().enumerate().rev() {
        if d > 0 {
            idx[k] = i % d;
            i /= d;
        }
    }
    show_shape(&idx)
}

/// A prefix that explains many mismatched names, with how many it explains.
#[derive(Debug, PartialEq)]
enum Prefix {
    /// The file's names are the model's with this prefix (`module.`).
    Extra(String, usize),
    /// The model's names are the file's with this prefix.
    Lacking(String, usize),
}

/// Finds the prefix (ending at a `.`) that turns the most unexpected names into missing ones,
/// or the most missing names into unexpected ones. Reported when it explains at least half
/// of the smaller list, and at least one name.
fn common_prefix(unexpected: &[&str], missing: &[&str]) -> Option<Prefix> {
    fn best(from: &[&str], to: &[&str]) -> Option<(String, usize)> {
        let targets: HashSet<&str> = to.iter().copied().collect();
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for name in from {
            for (i, _) in name.match_indices('.') {
                if targets.contains(&name[i + 1..]) {
                    *counts.entry(&name[..i + 1]).or_default() += 1;
                }
            }
        }
        counts
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
            .map(|(p, n)| (p.to_string(), n))
    }
    let need = (unexpected.len().min(missing.len()) / 2).max(1);
    let extra = best(unexpected, missing).filter(|(_, n)| *n >= need);
    let lacking = best(missing, unexpected).filter(|(_, n)| *n >= need);
    match (extra, lacking) {
        (Some(e), Some(l)) if l.1 > e.1 => Some(Prefix::Lacking(l.0, l.1)),
        (Some(e), _) => Some(Prefix::Extra(e.0, e.1)),
        (None, Some(l)) => Some(Prefix::Lacking(l.0, l.1)),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x03ff), 1023.0 * 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x0200), 2f32.powi(-15));
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
    }

    #[test]
    fn prefix_detection() {
        let missing = ["conv1.weight", "conv1.bias", "fc.weight"];
        let unexpected = [
            "module.conv1.weight",
            "module.conv1.bias",
            "module.fc.weight",
        ];
        assert_eq!(
            common_prefix(&unexpected, &missing),
            Some(Prefix::Extra("module.".into(), 3))
        );
        let unexpected = ["conv1.weight", "conv1.bias"];
        let missing = [
            "backbone.conv1.weight",
            "backbone.conv1.bias",
            "head.weight",
        ];
        assert_eq!(
            common_prefix(&unexpected, &missing),
            Some(Prefix::Lacking("backbone.".into(), 2))
        );
        assert_eq!(common_prefix(&["a.b"], &["c.d"]), None);
    }

    #[test]
    fn xoshiro_reference() {
        // First outputs of xoshiro256** from state [1, 2, 3, 4] (reference implementation).
        let mut r = Xoshiro256 { s: [1, 2, 3, 4] };
        assert_eq!(r.next_u64(), 11520);
        assert_eq!(r.next_u64(), 0);
        assert_eq!(r.next_u64(), 1509978240);
        assert_eq!(r.next_u64(), 1215971899390074240);
    }

    #[test]
    fn show_index_is_c_order() {
        assert_eq!(show_index(&[2, 1, 3, 3], 3), "[0, 0, 1, 0]");
        assert_eq!(show_index(&[2, 1, 3, 3], 9), "[1, 0, 0, 0]");
    }
}
