//! The safetensors format: 8-byte little-endian header length, a JSON header naming each tensor's
//! dtype, shape and byte range, then the data. Files are memory-mapped; f32 (and other native
//! dtypes) become tensors that borrow the mapping without a copy. Every defect in a file is an error
//! that names the file and the tensor. Sharded checkpoints (`*.index.json`) are `WeightFiles`.
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::storage::{CpuElement, CpuStorage, MappedBuffer};
use crate::tensor::Tensor;
use half::{bf16, f16};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Element types a safetensors file may declare, and how each is held here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileDType {
    Bool,
    U8,
    I8,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    F64,
    I64,
    U64,
}

impl FileDType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "BOOL" => FileDType::Bool,
            "U8" => FileDType::U8,
            "I8" => FileDType::I8,
            "I16" => FileDType::I16,
            "U16" => FileDType::U16,
            "F16" => FileDType::F16,
            "BF16" => FileDType::BF16,
            "I32" => FileDType::I32,
            "U32" => FileDType::U32,
            "F32" => FileDType::F32,
            "F64" => FileDType::F64,
            "I64" => FileDType::I64,
            "U64" => FileDType::U64,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            FileDType::Bool => "BOOL",
            FileDType::U8 => "U8",
            FileDType::I8 => "I8",
            FileDType::I16 => "I16",
            FileDType::U16 => "U16",
            FileDType::F16 => "F16",
            FileDType::BF16 => "BF16",
            FileDType::I32 => "I32",
            FileDType::U32 => "U32",
            FileDType::F32 => "F32",
            FileDType::F64 => "F64",
            FileDType::I64 => "I64",
            FileDType::U64 => "U64",
        }
    }

    pub fn size(self) -> usize {
        match self {
            FileDType::Bool | FileDType::U8 | FileDType::I8 => 1,
            FileDType::I16 | FileDType::U16 | FileDType::F16 | FileDType::BF16 => 2,
            FileDType::I32 | FileDType::U32 | FileDType::F32 => 4,
            FileDType::F64 | FileDType::I64 | FileDType::U64 => 8,
        }
    }

    /// The engine dtype a tensor of this file dtype becomes.
    pub fn engine_dtype(self) -> DType {
        match self {
            FileDType::F32 | FileDType::F64 => DType::F32,
            FileDType::BF16 => DType::BF16,
            FileDType::F16 => DType::F16,
            FileDType::Bool | FileDType::U8 => DType::U8,
            _ => DType::I64,
        }
    }

    fn of(dtype: DType) -> Self {
        match dtype {
            DType::F32 => FileDType::F32,
            DType::BF16 => FileDType::BF16,
            DType::F16 => FileDType::F16,
            DType::U8 => FileDType::U8,
            DType::I64 => FileDType::I64,
        }
    }
}

/// One tensor's entry in the header.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub dtype: FileDType,
    pub shape: Vec<usize>,
    /// Byte range relative to the start of the data section.
    pub start: usize,
    pub end: usize,
}

/// An open, validated safetensors file.
pub struct SafeTensors {
    path: PathBuf,
    map: Arc<memmap2::Mmap>,
    data_start: usize,
    infos: BTreeMap<String, TensorInfo>,
    metadata: BTreeMap<String, String>,
}

impl std::fmt::Debug for SafeTensors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SafeTensors({}, {} tensors)", self.path.display(), self.infos.len())
    }
}

fn file_err(path: &Path, detail: impl Into<String>) -> Error {
    Error::File { path: path.display().to_string(), detail: detail.into() }
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Io { path: path.display().to_string(), source: e }
}

impl SafeTensors {
    /// Maps and validates the file: header length, JSON, dtypes, shapes and byte ranges.
    pub fn open(path: impl AsRef<Path>) -> Result<SafeTensors> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
        // SAFETY: the mapping is read-only. Like every mmap-based loader we rely on the file not being
        // truncated or rewritten by another process while it is mapped.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io_err(path, e))?;
        SafeTensors::from_map(path, Arc::new(map))
    }

    fn from_map(path: &Path, map: Arc<memmap2::Mmap>) -> Result<SafeTensors> {
        let bytes: &[u8] = &map;
        if bytes.len() < 8 {
            return Err(file_err(
                path,
                format!("truncated: {} bytes, too short for the 8-byte header length", bytes.len()),
            ));
        }
        let mut len8 = [0u8; 8];
        len8.copy_from_slice(&bytes[..8]);
        let header_len = u64::from_le_bytes(len8);
        let available = (bytes.len() - 8) as u64;
        if header_len > available {
            return Err(file_err(
                path,
                format!(
                    "header length {header_len} runs past the end of the file ({available} bytes after the length)"
                ),
            ));
        }
        let data_start = 8 + header_len as usize;
        let header = std::str::from_utf8(&bytes[8..data_start])
            .map_err(|e| file_err(path, format!("header is not UTF-8: {e}")))?;
        let json: serde_json::Value =
            serde_json::from_str(header).map_err(|e| file_err(path, format!("header is not valid JSON: {e}")))?;
        let obj = json.as_object().ok_or_else(|| file_err(path, "header is not a JSON object"))?;
        let data_len = bytes.len() - data_start;
        let mut infos = BTreeMap::new();
        let mut metadata = BTreeMap::new();
        for (name, entry) in obj {
            if name == "__metadata__" {
                if let Some(m) = entry.as_object() {
                    for (k, v) in m {
                        metadata.insert(k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()));
                    }
                }
                continue;
            }
            infos.insert(name.clone(), parse_entry(path, name, entry, data_len)?);
        }
        // Byte ranges may not overlap.
        let mut ranges: Vec<(usize, usize, &String)> =
            infos.iter().filter(|(_, i)| i.end > i.start).map(|(n, i)| (i.start, i.end, n)).collect();
        ranges.sort();
        for w in ranges.windows(2) {
            if w[1].0 < w[0].1 {
                return Err(file_err(
                    path,
                    format!(
                        "tensors `{}` and `{}` overlap (bytes {}..{} and {}..{})",
                        w[0].2, w[1].2, w[0].0, w[0].1, w[1].0, w[1].1
                    ),
                ));
            }
        }
        Ok(SafeTensors { path: path.to_path_buf(), map, data_start, infos, metadata })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.infos.keys().map(String::as_str)
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.infos.get(name)
    }

    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    pub fn contains(&self, name: &str) -> bool {
        self.infos.contains_key(name)
    }

    fn info_or_err(&self, name: &str) -> Result<&TensorInfo> {
        self.infos.get(name).ok_or_else(|| file_err(&self.path, format!("no tensor named `{name}`")))
    }

    /// The raw bytes of a tensor.
    pub fn bytes(&self, name: &str) -> Result<&[u8]> {
        let i = self.info_or_err(name)?;
        Ok(&self.map[self.data_start + i.start..self.data_start + i.end])
    }

    /// The tensor in the engine dtype its file dtype maps to (`FileDType::engine_dtype`). Native
    /// dtypes whose bytes are aligned borrow the mapping; others are converted into owned memory.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let info = self.info_or_err(name)?;
        let numel: usize = info.shape.iter().product();
        let native = matches!(
            info.dtype,
            FileDType::F32 | FileDType::BF16 | FileDType::F16 | FileDType::U8 | FileDType::I64 | FileDType::Bool
        );
        if native {
            let dtype = info.dtype.engine_dtype();
            if let Some(m) = MappedBuffer::new(self.map.clone(), self.data_start + info.start, numel, dtype) {
                return Ok(Tensor::from_storage(CpuStorage::Mapped(m), &info.shape));
            }
        }
        let b = self.bytes(name)?;
        let storage = match info.dtype {
            FileDType::F32 => CpuStorage::F32(le_values(b, f32::from_le_bytes)),
            FileDType::F64 => CpuStorage::F32(le_values(b, |x: [u8; 8]| f64::from_le_bytes(x) as f32)),
            FileDType::BF16 => CpuStorage::BF16(le_values(b, |x| bf16::from_bits(u16::from_le_bytes(x)))),
            FileDType::F16 => CpuStorage::F16(le_values(b, |x| f16::from_bits(u16::from_le_bytes(x)))),
            FileDType::U8 | FileDType::Bool => CpuStorage::U8(b.to_vec()),
            FileDType::I8 => CpuStorage::I64(b.iter().map(|&x| x as i8 as i64).collect()),
            FileDType::I16 => CpuStorage::I64(le_values(b, |x| i16::from_le_bytes(x) as i64)),
            FileDType::U16 => CpuStorage::I64(le_values(b, |x| u16::from_le_bytes(x) as i64)),
            FileDType::I32 => CpuStorage::I64(le_values(b, |x| i32::from_le_bytes(x) as i64)),
            FileDType::U32 => CpuStorage::I64(le_values(b, |x| u32::from_le_bytes(x) as i64)),
            FileDType::I64 => CpuStorage::I64(le_values(b, i64::from_le_bytes)),
            FileDType::U64 => CpuStorage::I64(le_values(b, |x| u64::from_le_bytes(x) as i64)),
        };
        Ok(Tensor::from_storage(storage, &info.shape))
    }

    /// The tensor as f32: f32 data borrows the mapping, bf16/f16/f64 are converted once.
    pub fn tensor_f32(&self, name: &str) -> Result<Tensor> {
        let info = self.info_or_err(name)?;
        if !matches!(info.dtype, FileDType::F32 | FileDType::F64 | FileDType::BF16 | FileDType::F16) {
            return Err(file_err(
                &self.path,
                format!("tensor `{name}` has dtype {}, not a float type", info.dtype.name()),
            ));
        }
        self.tensor(name)?.to_dtype(DType::F32)
    }
}

fn le_values<const N: usize, T>(b: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    b.chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            f(a)
        })
        .collect()
}

fn parse_entry(path: &Path, name: &str, entry: &serde_json::Value, data_len: usize) -> Result<TensorInfo> {
    let bad = |what: &str| file_err(path, format!("tensor `{name}`: {what}"));
    let dtype_s = entry.get("dtype").and_then(|d| d.as_str()).ok_or_else(|| bad("missing `dtype`"))?;
    let dtype = FileDType::parse(dtype_s).ok_or_else(|| bad(&format!("unknown or unsupported dtype `{dtype_s}`")))?;
    let shape: Vec<usize> = entry
        .get("shape")
        .and_then(|s| s.as_array())
        .ok_or_else(|| bad("missing `shape`"))?
        .iter()
        .map(|d| d.as_u64().map(|d| d as usize).ok_or_else(|| bad("shape entries must be non-negative integers")))
        .collect::<Result<_>>()?;
    let offsets = entry.get("data_offsets").and_then(|o| o.as_array()).ok_or_else(|| bad("missing `data_offsets`"))?;
    let (start, end) = match offsets.as_slice() {
        [s, e] => (
            s.as_u64().ok_or_else(|| bad("data_offsets must be integers"))? as usize,
            e.as_u64().ok_or_else(|| bad("data_offsets must be integers"))? as usize,
        ),
        _ => return Err(bad("data_offsets must be [start, end]")),
    };
    if start > end || end > data_len {
        return Err(bad(&format!("byte range {start}..{end} is out of range (data section holds {data_len} bytes)")));
    }
    let numel = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(|| bad("shape overflows"))?;
    let expected = numel.checked_mul(dtype.size()).ok_or_else(|| bad("shape overflows"))?;
    if end - start != expected {
        return Err(bad(&format!(
            "shape {shape:?} of {} needs {expected} bytes but its range {start}..{end} holds {}",
            dtype.name(),
            end - start
        )));
    }
    Ok(TensorInfo { dtype, shape, start, end })
}

/// Writes tensors to a safetensors file atomically (a temporary name, then rename).
pub fn save_safetensors(
    path: impl AsRef<Path>,
    tensors: &[(String, Tensor)],
    metadata: Option<&BTreeMap<String, String>>,
) -> Result<()> {
    let path = path.as_ref();
    // Widest dtypes first, then by name: with an 8-aligned data section every tensor then starts
    // aligned for its dtype without padding (the format forbids holes between tensors).
    let mut sorted: Vec<&(String, Tensor)> = tensors.iter().collect();
    sorted.sort_by(|a, b| b.1.dtype().size_in_bytes().cmp(&a.1.dtype().size_in_bytes()).then_with(|| a.0.cmp(&b.0)));
    let mut header = serde_json::Map::new();
    if let Some(m) = metadata {
        let m: serde_json::Map<String, serde_json::Value> =
            m.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
        header.insert("__metadata__".into(), serde_json::Value::Object(m));
    }
    let mut offset = 0usize;
    for (name, t) in &sorted {
        if header.contains_key(name) {
            return Err(file_err(path, format!("tensor name `{name}` given twice")));
        }
        let end = offset + t.numel() * t.dtype().size_in_bytes();
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": FileDType::of(t.dtype()).name(), "shape": t.shape(), "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut header_bytes = serde_json::to_vec(&serde_json::Value::Object(header))
        .map_err(|e| file_err(path, format!("cannot encode header: {e}")))?;
    // Pad so the data section starts 8-byte aligned (zero-copy loads of every dtype).
    while !(8 + header_bytes.len()).is_multiple_of(8) {
        header_bytes.push(b' ');
    }
    // Streamed tensor by tensor: a model is never held twice in memory to be written.
    write_atomic_with(path, |f| {
        f.write_all(&(header_bytes.len() as u64).to_le_bytes())?;
        f.write_all(&header_bytes)?;
        for (_, t) in &sorted {
            let bytes = tensor_bytes(t).map_err(std::io::Error::other)?;
            f.write_all(&bytes)?;
        }
        Ok(())
    })
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// Runs `write` on a buffered temporary file beside `path`, syncs it and renames it over `path`;
/// on failure the temporary file is removed and `path` is untouched.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<()> {
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let run = || -> std::io::Result<()> {
        let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
        write(&mut f)?;
        let f = f.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    run().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(path, e)
    })
}

fn tensor_bytes(t: &Tensor) -> Result<Vec<u8>> {
    fn raw<T: CpuElement>(t: &Tensor) -> Result<Vec<u8>> {
        Ok(bytemuck::cast_slice::<T, u8>(&t.to_vec::<T>()?).to_vec())
    }
    match t.dtype() {
        DType::F32 => raw::<f32>(t),
        DType::BF16 => raw::<bf16>(t),
        DType::F16 => raw::<f16>(t),
        DType::U8 => raw::<u8>(t),
        DType::I64 => raw::<i64>(t),
    }
}

/// The weights of a model folder: `model.safetensors`, or the shards a `model.safetensors.index.json`
/// lists (any file name works: pass the `.safetensors` or `.index.json` path, or the folder).
pub struct WeightFiles {
    files: Vec<SafeTensors>,
    index: HashMap<String, usize>,
    /// Weights already in memory (a GGUF file's, dequantized) and the file they came from.
    loaded: HashMap<String, Tensor>,
    loaded_from: PathBuf,
}

impl std::fmt::Debug for WeightFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WeightFiles({} files, {} tensors)", self.files.len(), self.index.len() + self.loaded.len())
    }
}

impl WeightFiles {
    pub fn open(path: impl AsRef<Path>) -> Result<WeightFiles> {
        let path = path.as_ref();
        if path.is_dir() {
            let single = path.join("model.safetensors");
            let index = path.join("model.safetensors.index.json");
            return if single.exists() {
                WeightFiles::open(single)
            } else if index.exists() {
                WeightFiles::open(index)
            } else {
                Err(file_err(path, "no model.safetensors or model.safetensors.index.json in this folder"))
            };
        }
        if path.to_string_lossy().ends_with(".json") {
            return WeightFiles::open_index(path);
        }
        let file = SafeTensors::open(path)?;
        let index = file.names().map(|n| (n.to_string(), 0)).collect();
        Ok(WeightFiles { files: vec![file], index, loaded: HashMap::new(), loaded_from: PathBuf::new() })
    }

    /// Weights held in memory under their names; `source` is the file named in errors.
    pub fn from_tensors(source: impl AsRef<Path>, tensors: HashMap<String, Tensor>) -> WeightFiles {
        let loaded_from = source.as_ref().to_path_buf();
        WeightFiles { files: Vec::new(), index: HashMap::new(), loaded: tensors, loaded_from }
    }

    fn open_index(path: &Path) -> Result<WeightFiles> {
        let text = std::fs::read_to_string(path).map_err(|e| io_err(path, e))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| file_err(path, format!("not valid JSON: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| file_err(path, "no `weight_map` object"))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut shard_names: Vec<String> = Vec::new();
        let mut index = HashMap::new();
        for (tensor, shard) in map {
            let shard = shard.as_str().ok_or_else(|| file_err(path, format!("shard of `{tensor}` is not a string")))?;
            let i = match shard_names.iter().position(|s| s == shard) {
                Some(i) => i,
                None => {
                    shard_names.push(shard.to_string());
                    shard_names.len() - 1
                }
            };
            index.insert(tensor.clone(), i);
        }
        let files: Vec<SafeTensors> =
            shard_names.iter().map(|s| SafeTensors::open(dir.join(s))).collect::<Result<_>>()?;
        for (tensor, &i) in &index {
            if !files[i].contains(tensor) {
                return Err(file_err(
                    files[i].path(),
                    format!("the index lists `{tensor}` here, but the file has no such tensor"),
                ));
            }
        }
        Ok(WeightFiles { files, index, loaded: HashMap::new(), loaded_from: PathBuf::new() })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().chain(self.loaded.keys()).map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name) || self.loaded.contains_key(name)
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).and_then(|&i| self.files[i].info(name))
    }

    fn file_of(&self, name: &str) -> Result<&SafeTensors> {
        match self.index.get(name) {
            Some(&i) => Ok(&self.files[i]),
            None => Err(Error::File {
                path: self.files.first().map(|f| f.path().display().to_string()).unwrap_or_default(),
                detail: format!("no tensor named `{name}`"),
            }),
        }
    }

    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        match self.loaded.get(name) {
            Some(t) => Ok(t.clone()),
            None => self.file_of(name)?.tensor(name),
        }
    }

    pub fn tensor_f32(&self, name: &str) -> Result<Tensor> {
        match self.loaded.get(name) {
            Some(t) => t.to_dtype(DType::F32),
            None => self.file_of(name)?.tensor_f32(name),
        }
    }

    /// The f32 tensor, checked to have `shape` (an error names the tensor, file and both shapes).
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let (t, path) = match self.loaded.get(name) {
            Some(t) => (t.to_dtype(DType::F32)?, self.loaded_from.as_path()),
            None => {
                let file = self.file_of(name)?;
                (file.tensor_f32(name)?, file.path())
            }
        };
        if t.shape() != shape {
            return Err(file_err(path, format!("tensor `{name}` has shape {:?}, expected {shape:?}", t.shape())));
        }
        Ok(t)
    }
}
