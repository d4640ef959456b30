//! GGUF, llama.cpp's model file (versions 2 and 3, little-endian): a header with typed metadata
//! (`general.architecture`, `llama.block_count`, `tokenizer.ggml.tokens`, ...), tensor infos (name,
//! dimensions innermost first, ggml type, offset), then the tensor data, each tensor at a multiple
//! of `general.alignment` (32 by default) from the aligned start of the data section. The file is
//! memory-mapped; tensors are dequantized to f32 on request (F32 ones borrow the mapping).
//!
//! - [`GgufFile`]: the reader; every defect (bad magic, unsupported version, truncation, offsets
//!   outside the data, unknown types) is an error naming the file.
//! - [`llama`]: a LLaMA model's Hugging Face config and weights out of a GGUF file.
//! - [`tokenizer`]: the tokenizer stored in the metadata, as a `tokenizer.json`.
//! - [`packed`]: block-quantized weights kept in the file as frozen packed matrices (QLoRA).
mod dequant;
pub mod llama;
pub mod packed;
pub mod tokenizer;

pub use dequant::{dequantize, dequantize_into, GgmlType};

use crate::error::{Error, Result};
use crate::storage::{CpuStorage, MappedBuffer};
use crate::tensor::Tensor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A metadata value. Arrays hold values of one type (nested arrays are allowed by the format).
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// The value as an unsigned integer, when it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    /// The value as a float, when it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            GgufValue::I8(v) => Some(v.into()),
            GgufValue::I16(v) => Some(v.into()),
            GgufValue::I32(v) => Some(v.into()),
            GgufValue::I64(v) => Some(v as f64),
            _ => self.as_u64().map(|v| v as f64),
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One tensor's entry.
#[derive(Clone, Debug)]
pub struct GgufTensorInfo {
    /// ggml's order: innermost (fastest-varying) dimension first.
    pub dims: Vec<usize>,
    pub ggml_type: GgmlType,
    /// Byte offset from the start of the data section.
    pub offset: usize,
    /// Bytes of data (0 for types this reader cannot size, which cannot be read either).
    pub size: usize,
}

impl GgufTensorInfo {
    /// The row-major shape: the dimensions outermost first (`[out, in]` for a weight).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().copied().collect()
    }
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }
}

/// An open, validated GGUF file.
pub struct GgufFile {
    path: PathBuf,
    map: Arc<memmap2::Mmap>,
    version: u32,
    alignment: usize,
    data_start: usize,
    metadata: BTreeMap<String, GgufValue>,
    /// In file order.
    tensors: Vec<(String, GgufTensorInfo)>,
    index: BTreeMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GgufFile({}, v{}, {} tensors)", self.path.display(), self.version, self.tensors.len())
    }
}

/// Whether `path` names a GGUF file (by its `.gguf` extension), as opposed to a model folder.
pub fn is_gguf(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) && !path.is_dir()
}

/// Whether `path` is an existing `.gguf` file.
pub fn is_gguf_file(path: &Path) -> bool {
    is_gguf(path) && path.is_file()
}

/// Reads little-endian values from the header, with errors that say what was being read where.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn err(&self, detail: String) -> Error {
        Error::File { path: self.path.display().to_string(), detail }
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| {
            self.err(format!(
                "truncated: reading {what} ({n} bytes) at byte {} of a {}-byte file",
                self.pos,
                self.bytes.len()
            ))
        })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    /// A count that must fit in the bytes left (each counted item takes at least `min_bytes`), so
    /// a corrupt count cannot make us allocate without bound.
    fn count(&mut self, what: &str, min_bytes: usize) -> Result<usize> {
        let n = self.u64(what)?;
        let left = (self.bytes.len() - self.pos) as u64;
        if n.saturating_mul(min_bytes as u64) > left {
            return Err(self.err(format!(
                "truncated or corrupt: {what} is {n}, more than the {left} bytes left after byte {} can hold",
                self.pos
            )));
        }
        Ok(n as usize)
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.count(&format!("length of {what}"), 1)?;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|e| self.err(format!("{what} is not UTF-8: {e}")))
    }
    fn value(&mut self, ty: u32, what: &str, depth: usize) -> Result<GgufValue> {
        Ok(match ty {
            0 => GgufValue::U8(self.array::<1>(what)?[0]),
            1 => GgufValue::I8(self.array::<1>(what)?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.array(what)?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array(what)?)),
            4 => GgufValue::U32(self.u32(what)?),
            5 => GgufValue::I32(i32::from_le_bytes(self.array(what)?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(self.err(format!("{what}: boolean byte {b} is neither 0 nor 1"))),
            },
            8 => GgufValue::String(self.string(what)?),
            9 => {
                if depth > 8 {
                    return Err(self.err(format!("{what}: arrays nested deeper than 8 levels")));
                }
                let elem = self.u32(&format!("element type of {what}"))?;
                let n = self.count(&format!("length of {what}"), 1)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(elem, what, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64(what)?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(what)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(what)?)),
            t => return Err(self.err(format!("{what} has unknown metadata value type {t}"))),
        })
    }
}

/// The most dimensions a ggml tensor has.
const MAX_DIMS: usize = 4;

impl GgufFile {
    /// Maps and validates the file: magic, version, metadata, tensor infos and data ranges.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| Error::Io { path: path.display().to_string(), source: e })?;
        // SAFETY: read-only mapping; like every mmap-based loader we rely on the file not being
        // truncated or rewritten by another process while it is mapped.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| Error::Io { path: path.display().to_string(), source: e })?;
        GgufFile::parse(path, Arc::new(map))
    }

    fn parse(path: &Path, map: Arc<memmap2::Mmap>) -> Result<GgufFile> {
        let mut c = Cursor { bytes: &map, pos: 0, path };
        let magic = c.array::<4>("the magic")?;
        if &magic != b"GGUF" {
            return Err(c.err(format!("not a GGUF file: it starts with {magic:02x?}, not the magic `GGUF`")));
        }
        let version = c.u32("the version")?;
        if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
            return Err(c.err("a big-endian GGUF file; only little-endian files are supported".into()));
        }
        if version != 2 && version != 3 {
            return Err(c.err(format!("GGUF version {version} is not supported (versions 2 and 3 are)")));
        }
        // A tensor info takes at least 8 + 4 + 4 + 8 bytes; a metadata pair at least 8 + 4 + 1.
        let n_tensors = c.count("the tensor count", 24)?;
        let n_kv = c.count("the metadata count", 13)?;
        let mut metadata = BTreeMap::new();
        for i in 0..n_kv {
            let key = c.string(&format!("the key of metadata entry {i}"))?;
            let ty = c.u32(&format!("the value type of `{key}`"))?;
            let value = c.value(ty, &format!("the value of `{key}`"), 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(c.err(format!("metadata key `{key}` appears twice")));
            }
        }
        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a as usize,
                _ => return Err(c.err(format!("general.alignment {v:?} is not a power of two"))),
            },
        };
        let mut tensors = Vec::with_capacity(n_tensors);
        let mut index = BTreeMap::new();
        for i in 0..n_tensors {
            let name = c.string(&format!("the name of tensor {i}"))?;
            let n_dims = c.u32(&format!("the rank of `{name}`"))? as usize;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(c.err(format!("tensor `{name}` has {n_dims} dimensions (1 to {MAX_DIMS} are valid)")));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for d in 0..n_dims {
                let v = c.u64(&format!("dimension {d} of `{name}`"))?;
                dims.push(usize::try_from(v).map_err(|_| c.err(format!("tensor `{name}`: dimension {v} too large")))?);
            }
            let ggml_type = GgmlType(c.u32(&format!("the type of `{name}`"))?);
            if ggml_type.name().is_none() {
                return Err(c.err(format!("tensor `{name}` has {}", ggml_type.describe())));
            }
            let offset = c.u64(&format!("the offset of `{name}`"))? as usize;
            let size = tensor_size(&name, &dims, ggml_type).map_err(|d| c.err(d))?;
            if index.insert(name.clone(), tensors.len()).is_some() {
                return Err(c.err(format!("tensor `{name}` appears twice")));
            }
            tensors.push((name, GgufTensorInfo { dims, ggml_type, offset, size }));
        }
        let data_start = c.pos.next_multiple_of(alignment);
        let data_len = map.len().saturating_sub(data_start);
        for (name, t) in &tensors {
            if !t.offset.is_multiple_of(alignment) {
                return Err(c.err(format!(
                    "tensor `{name}`: offset {} is not a multiple of the alignment {alignment}",
                    t.offset
                )));
            }
            if t.offset.checked_add(t.size).is_none_or(|end| end > data_len) {
                return Err(c.err(format!(
                    "tensor `{name}`: bytes {}..{} are outside the data section ({data_len} bytes from byte {data_start})",
                    t.offset,
                    t.offset.saturating_add(t.size)
                )));
            }
        }
        Ok(GgufFile { path: path.to_path_buf(), map, version, alignment, data_start, metadata, tensors, index })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn version(&self) -> u32 {
        self.version
    }
    pub fn alignment(&self) -> usize {
        self.alignment
    }
    pub fn metadata(&self) -> &BTreeMap<String, GgufValue> {
        &self.metadata
    }
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }
    /// Tensor names and infos in file order.
    pub fn tensors(&self) -> impl Iterator<Item = (&str, &GgufTensorInfo)> {
        self.tensors.iter().map(|(n, t)| (n.as_str(), t))
    }
    pub fn info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i].1)
    }

    pub(crate) fn err(&self, detail: impl Into<String>) -> Error {
        Error::File { path: self.path.display().to_string(), detail: detail.into() }
    }

    /// A required metadata value, with an error naming the key when it is missing.
    pub fn require(&self, key: &str) -> Result<&GgufValue> {
        self.get(key).ok_or_else(|| self.err(format!("missing metadata `{key}`")))
    }

    /// The raw bytes of a tensor.
    pub fn bytes(&self, name: &str) -> Result<&[u8]> {
        let t = self.info(name).ok_or_else(|| self.err(format!("no tensor named `{name}`")))?;
        let start = self.data_start + t.offset;
        Ok(&self.map[start..start + t.size])
    }

    /// The tensor as f32 with its row-major shape (dimensions reversed), dequantized; F32 data is
    /// used in place.
    pub fn tensor_f32(&self, name: &str) -> Result<Tensor> {
        let t = self.info(name).ok_or_else(|| self.err(format!("no tensor named `{name}`")))?;
        let shape = t.shape();
        if t.ggml_type == GgmlType::F32 {
            if let Some(m) =
                MappedBuffer::new(self.map.clone(), self.data_start + t.offset, t.numel(), crate::DType::F32)
            {
                return Ok(Tensor::from_storage(CpuStorage::Mapped(m), &shape));
            }
        }
        let values = dequantize(t.ggml_type, self.bytes(name)?, t.numel(), &format!("tensor `{name}`"))
            .map_err(|e| self.err(e.to_string()))?;
        Tensor::from_vec(values, &shape)
    }
}

/// Bytes of a tensor, checking that its rows are whole blocks. Types that cannot be read here get
/// size 0 (an error comes when they are read).
fn tensor_size(name: &str, dims: &[usize], ty: GgmlType) -> std::result::Result<usize, String> {
    let Some((per_block, block_bytes)) = ty.block() else { return Ok(0) };
    if !dims[0].is_multiple_of(per_block) {
        return Err(format!(
            "tensor `{name}`: its first dimension {} is not a multiple of the {} block size {per_block}",
            dims[0],
            ty.describe()
        ));
    }
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .and_then(|n| (n / per_block).checked_mul(block_bytes))
        .ok_or_else(|| format!("tensor `{name}`: dimensions {dims:?} overflow"))
}
