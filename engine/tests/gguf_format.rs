//! The GGUF reader on small hand-made files: every metadata value type, alignment, each supported
//! block type against values derived from the format definition (blocks are encoded here from
//! chosen quants and scales, element by element, and the decoded values must equal the formula),
//! the Q/K row permutation, and malformed files (each a clear error, never a panic).
use engine::io::gguf::llama::{hf_name, unpermute_rows};
use engine::io::gguf::{GgufFile, GgufValue};
use engine::Tensor;
use half::{bf16, f16};
use std::path::PathBuf;

/// Builds a GGUF file in memory.
struct Builder {
    version: u32,
    alignment: usize,
    kv: Vec<u8>,
    n_kv: u64,
    infos: Vec<u8>,
    n_tensors: u64,
    data: Vec<u8>,
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

impl Builder {
    fn new() -> Builder {
        Builder {
            version: 3,
            alignment: 32,
            kv: Vec::new(),
            n_kv: 0,
            infos: Vec::new(),
            n_tensors: 0,
            data: Vec::new(),
        }
    }
    /// A metadata entry whose value (type id and bytes) is given raw.
    fn kv(&mut self, key: &str, ty: u32, value: &[u8]) -> &mut Self {
        string(&mut self.kv, key);
        self.kv.extend(ty.to_le_bytes());
        self.kv.extend(value);
        self.n_kv += 1;
        self
    }
    /// A tensor with dims innermost first, its data placed at the next aligned offset.
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, bytes: &[u8]) -> &mut Self {
        while !self.data.len().is_multiple_of(self.alignment) {
            self.data.push(0);
        }
        let offset = self.data.len() as u64;
        self.tensor_at(name, dims, ty, offset);
        self.data.extend(bytes);
        self
    }
    fn tensor_at(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        string(&mut self.infos, name);
        self.infos.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            self.infos.extend(d.to_le_bytes());
        }
        self.infos.extend(ty.to_le_bytes());
        self.infos.extend(offset.to_le_bytes());
        self.n_tensors += 1;
        self
    }
    fn bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(self.version.to_le_bytes());
        out.extend(self.n_tensors.to_le_bytes());
        out.extend(self.n_kv.to_le_bytes());
        out.extend(&self.kv);
        out.extend(&self.infos);
        while !out.len().is_multiple_of(self.alignment) {
            out.push(0);
        }
        out.extend(&self.data);
        out
    }
}

/// A file of its own in the temp dir, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(bytes: &[u8]) -> TempFile {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("engine-gguf-{}-{n}.gguf", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        TempFile(p)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn open(b: &Builder) -> (TempFile, engine::Result<GgufFile>) {
    let f = TempFile::new(&b.bytes());
    let r = GgufFile::open(&f.0);
    (f, r)
}

fn open_err(bytes: &[u8]) -> String {
    let f = TempFile::new(bytes);
    let e = GgufFile::open(&f.0).unwrap_err().to_string();
    assert!(e.contains(&f.0.display().to_string()), "error does not name the file: {e}");
    e
}

fn h(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_bits().to_le_bytes()
}

/// Decodes one tensor of the given type from a file holding only it.
fn decode(ty: u32, dims: &[u64], bytes: &[u8]) -> Vec<f32> {
    let mut b = Builder::new();
    b.tensor("t", dims, ty, bytes);
    let (_f, file) = open(&b);
    let file = file.unwrap();
    let t = file.tensor_f32("t").unwrap();
    let want_shape: Vec<usize> = dims.iter().rev().map(|&d| d as usize).collect();
    assert_eq!(t.shape(), want_shape.as_slice());
    t.to_vec::<f32>().unwrap()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{what}: element {i} is {g}, expected {w}");
    }
}

#[test]
fn metadata_of_every_value_type() {
    let mut b = Builder::new();
    b.kv("u8", 0, &[200])
        .kv("i8", 1, &[0xfe])
        .kv("u16", 2, &60000u16.to_le_bytes())
        .kv("i16", 3, &(-300i16).to_le_bytes())
        .kv("u32", 4, &4_000_000_000u32.to_le_bytes())
        .kv("i32", 5, &(-70000i32).to_le_bytes())
        .kv("f32", 6, &1.25f32.to_le_bytes())
        .kv("bool", 7, &[1])
        .kv("u64", 10, &(1u64 << 40).to_le_bytes())
        .kv("i64", 11, &(-5i64).to_le_bytes())
        .kv("f64", 12, &(-0.5f64).to_le_bytes());
    let mut s = Vec::new();
    string(&mut s, "héllo");
    b.kv("str", 8, &s);
    // An array of two arrays of u16.
    let mut arr = 9u32.to_le_bytes().to_vec();
    arr.extend(2u64.to_le_bytes());
    for vals in [[1u16, 2], [3, 4]] {
        arr.extend(2u32.to_le_bytes());
        arr.extend(2u64.to_le_bytes());
        for v in vals {
            arr.extend(v.to_le_bytes());
        }
    }
    b.kv("nested", 9, &arr);
    let (_f, file) = open(&b);
    let file = file.unwrap();
    let m = file.metadata();
    assert_eq!(m["u8"], GgufValue::U8(200));
    assert_eq!(m["i8"], GgufValue::I8(-2));
    assert_eq!(m["u16"], GgufValue::U16(60000));
    assert_eq!(m["i16"], GgufValue::I16(-300));
    assert_eq!(m["u32"].as_u64(), Some(4_000_000_000));
    assert_eq!(m["i32"], GgufValue::I32(-70000));
    assert_eq!(m["f32"].as_f64(), Some(1.25));
    assert_eq!(m["bool"].as_bool(), Some(true));
    assert_eq!(m["u64"], GgufValue::U64(1 << 40));
    assert_eq!(m["i64"], GgufValue::I64(-5));
    assert_eq!(m["i64"].as_u64(), None);
    assert_eq!(m["f64"], GgufValue::F64(-0.5));
    assert_eq!(m["str"].as_str(), Some("héllo"));
    let outer = m["nested"].as_array().unwrap();
    assert_eq!(outer[1], GgufValue::Array(vec![GgufValue::U16(3), GgufValue::U16(4)]));
    assert_eq!((file.version(), file.alignment(), file.tensors().count()), (3, 32, 0));
}

#[test]
fn version_2_and_a_custom_alignment() {
    let mut b = Builder::new();
    b.version = 2;
    b.alignment = 64;
    b.kv("general.alignment", 4, &64u32.to_le_bytes());
    let x = [1.0f32, -2.0, 3.5];
    let y = [0.25f32; 5];
    b.tensor("a", &[3], 0, bytemuck::cast_slice(&x)).tensor("b", &[5, 1], 0, bytemuck::cast_slice(&y));
    let (_f, file) = open(&b);
    let file = file.unwrap();
    assert_eq!((file.version(), file.alignment()), (2, 64));
    assert_eq!(file.info("b").unwrap().offset, 64);
    assert_eq!(file.tensor_f32("a").unwrap().to_vec::<f32>().unwrap(), x);
    assert_eq!(file.tensor_f32("b").unwrap().shape(), &[1, 5]);
    assert_eq!(file.tensor_f32("b").unwrap().to_vec::<f32>().unwrap(), y);
    assert!(file.tensor_f32("c").unwrap_err().to_string().contains("no tensor named `c`"));
}

#[test]
fn float_types() {
    let vals = [1.5f32, -2.0, 0.0, 65504.0, -0.125, 3.0];
    let f32_bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_close(&decode(0, &[3, 2], &f32_bytes), &vals, "F32");
    let f16_bytes: Vec<u8> = vals.iter().flat_map(|&v| h(v)).collect();
    assert_close(&decode(1, &[3, 2], &f16_bytes), &vals, "F16");
    let bf16_bytes: Vec<u8> = vals[..5].iter().flat_map(|&v| bf16::from_f32(v).to_bits().to_le_bytes()).collect();
    assert_close(&decode(30, &[5], &bf16_bytes), &[1.5, -2.0, 0.0, 65536.0, -0.125], "BF16");
}

#[test]
fn q8_0_q4_0_q4_1_blocks() {
    // Two rows of one block each, so the row order is checked too.
    let mut q8 = Vec::new();
    let mut want = Vec::new();
    for (d, shift) in [(0.5f32, 16i32), (-0.25, 100)] {
        q8.extend(h(d));
        for j in 0..32i32 {
            let q = (j * 7 - shift).clamp(-128, 127);
            q8.push(q as i8 as u8);
            want.push(d * q as f32);
        }
    }
    assert_close(&decode(8, &[32, 2], &q8), &want, "Q8_0");

    // Q4_0: element j < 16 is the low nibble of byte j, element 16 + j its high nibble; value d·(q − 8).
    let quants: Vec<u8> = (0..32).map(|e| ((e * 5 + 3) % 16) as u8).collect();
    let nibbles: Vec<u8> = (0..16).map(|j| quants[j] | (quants[j + 16] << 4)).collect();
    let mut q4_0 = h(2.0).to_vec();
    q4_0.extend(&nibbles);
    let want: Vec<f32> = quants.iter().map(|&q| 2.0 * (q as f32 - 8.0)).collect();
    assert_close(&decode(2, &[32], &q4_0), &want, "Q4_0");

    // Q4_1: value d·q + m.
    let mut q4_1 = h(0.25).to_vec();
    q4_1.extend(h(-1.5));
    q4_1.extend(&nibbles);
    let want: Vec<f32> = quants.iter().map(|&q| 0.25 * q as f32 - 1.5).collect();
    assert_close(&decode(3, &[32], &q4_1), &want, "Q4_1");
}

/// The 12 scale bytes of Q4_K / Q5_K holding eight 6-bit scales and mins (the encoder's packing:
/// sub-blocks 0..4 in the low 6 bits of bytes i and i+4; 4..8 in the nibbles of bytes 8..12,
/// their top two bits in the high bits of bytes i−4 and i).
fn pack_scales(sc: &[u8; 8], mn: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for i in 0..4 {
        s[i] = sc[i] | ((sc[i + 4] >> 4) << 6);
        s[i + 4] = mn[i] | ((mn[i + 4] >> 4) << 6);
        s[i + 8] = (sc[i + 4] & 15) | ((mn[i + 4] & 15) << 4);
    }
    s
}

#[test]
fn q4_k_and_q5_k_blocks() {
    let sc = [1u8, 63, 17, 32, 5, 48, 60, 33];
    let mn = [0u8, 9, 63, 20, 40, 1, 31, 62];
    let (d, dmin) = (0.5f32, 0.25f32);
    // Element e: sub-block s = e / 32 with its own scale and min; groups of 64 share 32 bytes,
    // the even sub-block in the low nibbles, the odd one in the high nibbles.
    let q5: Vec<u8> = (0..256).map(|e| ((e * 13 + e / 7) % 32) as u8).collect();
    let mut qs = [0u8; 128];
    let mut qh = [0u8; 32];
    for (e, &q) in q5.iter().enumerate() {
        let (s, l) = (e / 32, e % 32);
        let byte = 32 * (s / 2) + l;
        qs[byte] |= (q & 15) << (4 * (s % 2));
        qh[l] |= (q >> 4) << s;
    }
    let head = [h(d), h(dmin)].concat();
    let mut q4k = head.clone();
    q4k.extend(pack_scales(&sc, &mn));
    q4k.extend(qs);
    let want4: Vec<f32> = q5
        .iter()
        .enumerate()
        .map(|(e, &q)| d * sc[e / 32] as f32 * (q & 15) as f32 - dmin * mn[e / 32] as f32)
        .collect();
    assert_close(&decode(12, &[256], &q4k), &want4, "Q4_K");

    let mut q5k = head;
    q5k.extend(pack_scales(&sc, &mn));
    q5k.extend(qh);
    q5k.extend(qs);
    let want5: Vec<f32> =
        q5.iter().enumerate().map(|(e, &q)| d * sc[e / 32] as f32 * q as f32 - dmin * mn[e / 32] as f32).collect();
    assert_close(&decode(13, &[256], &q5k), &want5, "Q5_K");
}

#[test]
fn q6_k_block() {
    // Element e: half = e / 128, r = e % 128, k = r / 32, l = r % 32. Low 4 bits in byte
    // 64·half + l + 32·(k % 2) of ql (high nibble when k ≥ 2), top 2 bits at bits 2k of
    // qh[32·half + l]; value d · scales[e / 16] · (q − 32).
    let q6: Vec<u8> = (0..256).map(|e| ((e * 29 + 11) % 64) as u8).collect();
    let scales: Vec<i8> = (0..16).map(|i| (i * 9 - 70) as i8).collect();
    let mut ql = [0u8; 128];
    let mut qh = [0u8; 64];
    for (e, &q) in q6.iter().enumerate() {
        let (half, r) = (e / 128, e % 128);
        let (k, l) = (r / 32, r % 32);
        ql[64 * half + l + 32 * (k % 2)] |= (q & 15) << (4 * (k / 2));
        qh[32 * half + l] |= (q >> 4) << (2 * k);
    }
    let d = 0.125f32;
    let mut block = ql.to_vec();
    block.extend(qh);
    block.extend(scales.iter().map(|&s| s as u8));
    block.extend(h(d));
    let want: Vec<f32> = q6.iter().enumerate().map(|(e, &q)| d * scales[e / 16] as f32 * (q as f32 - 32.0)).collect();
    assert_close(&decode(14, &[256], &block), &want, "Q6_K");
}

#[test]
fn qk_permutation_is_undone() {
    // llama.cpp's permute: reshape(heads, 2, d/2, in).swapaxes(1, 2): HF row h·d + j·d/2 + i goes
    // to row h·d + 2i + j.
    let (heads, d, cols) = (3usize, 8usize, 2usize);
    let hf: Vec<f32> = (0..heads * d * cols).map(|x| x as f32).collect();
    let mut gguf = vec![0f32; hf.len()];
    for hd in 0..heads {
        for j in 0..2 {
            for i in 0..d / 2 {
                let (from, to) = (hd * d + j * d / 2 + i, hd * d + 2 * i + j);
                gguf[to * cols..to * cols + cols].copy_from_slice(&hf[from * cols..from * cols + cols]);
            }
        }
    }
    let t = Tensor::from_vec(gguf, &[heads * d, cols]).unwrap();
    assert_eq!(unpermute_rows(&t, heads).unwrap().to_vec::<f32>().unwrap(), hf);
    assert!(unpermute_rows(&t, 5).is_err());
    assert_eq!(hf_name("blk.12.attn_k.weight").unwrap(), "model.layers.12.self_attn.k_proj.weight");
    assert_eq!(hf_name("blk.0.ffn_norm.weight").unwrap(), "model.layers.0.post_attention_layernorm.weight");
    assert_eq!(hf_name("token_embd.weight").unwrap(), "model.embed_tokens.weight");
    assert_eq!(hf_name("blk.0.attn_qkv.weight"), None);
}

fn with_tensor(dims: &[u64], ty: u32, offset: u64, data: usize) -> Vec<u8> {
    let mut b = Builder::new();
    b.tensor_at("w", dims, ty, offset);
    b.data = vec![0; data];
    b.bytes()
}

#[test]
fn malformed_files_give_clear_errors() {
    let mut good = Builder::new();
    good.kv("general.architecture", 8, &[&4u64.to_le_bytes()[..], b"test"].concat());
    good.tensor("w", &[32, 2], 8, &[0u8; 68]);
    let bytes = good.bytes();
    assert!(GgufFile::open(&TempFile::new(&bytes).0).is_ok());

    assert!(open_err(b"GGML\x03\x00\x00\x00").contains("not a GGUF file"));
    assert!(open_err(b"").contains("truncated"));
    let mut v1 = bytes.clone();
    v1[4] = 1;
    assert!(open_err(&v1).contains("GGUF version 1 is not supported"));
    let mut be = bytes.clone();
    be[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert!(open_err(&be).contains("big-endian"));
    // Every cut through the header is a truncation error, and a cut through the data leaves the
    // tensor's bytes outside the file.
    let header_end = bytes.len() - 68;
    for cut in 0..header_end {
        let e = open_err(&bytes[..cut]);
        assert!(e.contains("truncated") || e.contains("outside the data section"), "cut at {cut}: {e}");
    }
    assert!(open_err(&bytes[..bytes.len() - 1]).contains("outside the data section"));

    assert!(open_err(&with_tensor(&[32, 2], 8, 64, 68)).contains("outside the data section"));
    assert!(open_err(&with_tensor(&[32, 2], 8, 8, 200)).contains("not a multiple of the alignment 32"));
    assert!(open_err(&with_tensor(&[16], 8, 0, 64)).contains("not a multiple of the Q8_0 block size 32"));
    assert!(open_err(&with_tensor(&[4], 99, 0, 64)).contains("unknown type id 99"));
    assert!(open_err(&with_tensor(&[4, 1, 1, 1, 1], 0, 0, 64)).contains("5 dimensions"));
    // A known type that is not supported reads as an error naming it.
    let f = TempFile::new(&with_tensor(&[32], 6, 0, 64));
    let e = GgufFile::open(&f.0).unwrap().tensor_f32("w").unwrap_err().to_string();
    assert!(e.contains("Q5_0") && e.contains("not supported") && e.contains("Q4_K"), "{e}");

    let mut b = Builder::new();
    b.kv("k", 13, &[0]);
    assert!(open_err(&b.bytes()).contains("unknown metadata value type 13"));
    let mut b = Builder::new();
    b.kv("k", 7, &[2]);
    assert!(open_err(&b.bytes()).contains("neither 0 nor 1"));
    let mut b = Builder::new();
    b.kv("k", 9, &[&8u32.to_le_bytes()[..], &u64::MAX.to_le_bytes()].concat());
    assert!(open_err(&b.bytes()).contains("length of the value of `k`"));
    let mut b = Builder::new();
    b.kv("k", 0, &[1]).kv("k", 0, &[2]);
    assert!(open_err(&b.bytes()).contains("appears twice"));
    let mut b = Builder::new();
    b.kv("general.alignment", 4, &24u32.to_le_bytes());
    assert!(open_err(&b.bytes()).contains("power of two"));
}

fn str_value(s: &str) -> Vec<u8> {
    let mut v = Vec::new();
    string(&mut v, s);
    v
}

fn str_array(items: &[&str]) -> Vec<u8> {
    let mut v = 8u32.to_le_bytes().to_vec();
    v.extend((items.len() as u64).to_le_bytes());
    for s in items {
        string(&mut v, s);
    }
    v
}

fn u32_array(items: &[u32]) -> Vec<u8> {
    let mut v = 5u32.to_le_bytes().to_vec();
    v.extend((items.len() as u64).to_le_bytes());
    for x in items {
        v.extend(x.to_le_bytes());
    }
    v
}

/// Tokenizer metadata: byte-level BPE (`Ġ` is the space byte), BOS `<s>` = 0 (control).
fn tokenizer_metadata(b: &mut Builder, pre: &str, add_bos: bool, model: &str) {
    let tokens = ["<s>", "</s>", "a", "b", "ab", "Ġ", "Ġa", "1", "2", "12"];
    b.kv("tokenizer.ggml.model", 8, &str_value(model))
        .kv("tokenizer.ggml.pre", 8, &str_value(pre))
        .kv("tokenizer.ggml.tokens", 9, &str_array(&tokens))
        .kv("tokenizer.ggml.token_type", 9, &u32_array(&[3, 3, 1, 1, 1, 1, 1, 1, 1, 1]))
        .kv("tokenizer.ggml.merges", 9, &str_array(&["a b", "Ġ a", "1 2"]))
        .kv("tokenizer.ggml.bos_token_id", 4, &0u32.to_le_bytes())
        .kv("tokenizer.ggml.add_bos_token", 7, &[add_bos as u8]);
}

/// A vocabulary-only GGUF with [`tokenizer_metadata`].
fn tokenizer_file(pre: &str, add_bos: bool, model: &str) -> TempFile {
    let mut b = Builder::new();
    tokenizer_metadata(&mut b, pre, add_bos, model);
    TempFile::new(&b.bytes())
}

#[test]
fn tokenizer_from_metadata() {
    use engine::models::tokenizer::Tokenizer;
    // smollm: each digit apart before BPE, so the merge `1 2` never applies; BOS in front.
    let f = tokenizer_file("smollm", true, "gpt2");
    let tok =
        Tokenizer::from_bytes(GgufFile::open(&f.0).unwrap().tokenizer_json().unwrap().to_string().as_bytes(), &f.0)
            .unwrap();
    assert_eq!(tok.encode("ab a12", true).unwrap(), vec![0, 4, 6, 7, 8]);
    assert_eq!(tok.encode("ab a12", false).unwrap(), vec![4, 6, 7, 8]);
    assert_eq!(tok.encode("<s>ab", false).unwrap(), vec![0, 4]);
    assert_eq!(tok.decode(&[0, 4, 6, 7, 8], true).unwrap(), "ab a12");
    // GPT-2's regex alone keeps "12" together, and the merge applies; no BOS when add_bos is false.
    let f = tokenizer_file("gpt-2", false, "gpt2");
    let file = GgufFile::open(&f.0).unwrap();
    let tok = Tokenizer::from_bytes(file.tokenizer_json().unwrap().to_string().as_bytes(), &f.0).unwrap();
    assert_eq!(tok.encode("ab a12", true).unwrap(), vec![4, 6, 9]);
    // What is not supported says so.
    let f = tokenizer_file("llama3", false, "gpt2");
    let e = GgufFile::open(&f.0).unwrap().tokenizer_json().unwrap_err().to_string();
    assert!(e.contains("tokenizer.ggml.pre `llama3` is not supported"), "{e}");
    let f = tokenizer_file("default", false, "llama");
    let e = GgufFile::open(&f.0).unwrap().tokenizer_json().unwrap_err().to_string();
    assert!(e.contains("tokenizer.ggml.model `llama` is not supported"), "{e}");
}

/// Deterministic values in [-1, 1) (a 64-bit LCG), so the tiny model needs no random crate.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Q8_0 blocks of `n` values: d = 1/64, quants from the values.
fn q8_0_blocks(n: usize, seed: u64) -> Vec<u8> {
    let v = values(n, seed);
    let mut out = Vec::new();
    for block in v.chunks(32) {
        out.extend(h(1.0 / 64.0));
        out.extend(block.iter().map(|x| ((x * 64.0) as i32).clamp(-127, 127) as i8 as u8));
    }
    out
}

/// A one-layer LLaMA GGUF (hidden 32, 2 heads of 16, 1 key/value head, MLP 64, the tokenizer of
/// `tokenizer_file`): F32 embedding and norms, Q8_0 projections.
fn tiny_llama() -> TempFile {
    let mut b = Builder::new();
    tokenizer_metadata(&mut b, "smollm", false, "gpt2");
    b.kv("general.architecture", 8, &str_value("llama"))
        .kv("llama.block_count", 4, &1u32.to_le_bytes())
        .kv("llama.context_length", 4, &64u32.to_le_bytes())
        .kv("llama.embedding_length", 4, &32u32.to_le_bytes())
        .kv("llama.feed_forward_length", 4, &64u32.to_le_bytes())
        .kv("llama.attention.head_count", 4, &2u32.to_le_bytes())
        .kv("llama.attention.head_count_kv", 4, &1u32.to_le_bytes())
        .kv("llama.rope.freq_base", 6, &10000f32.to_le_bytes())
        .kv("llama.attention.layer_norm_rms_epsilon", 6, &1e-5f32.to_le_bytes())
        .kv("llama.rope.dimension_count", 4, &16u32.to_le_bytes());
    let f32s = |n: usize, seed: u64| -> Vec<u8> { values(n, seed).iter().flat_map(|v| v.to_le_bytes()).collect() };
    let norm = |n: usize, seed: u64| -> Vec<u8> {
        values(n, seed).iter().flat_map(|v| (1.0 + 0.2 * v).to_le_bytes()).collect()
    };
    b.tensor("token_embd.weight", &[32, 10], 0, &f32s(320, 1))
        .tensor("blk.0.attn_norm.weight", &[32], 0, &norm(32, 2))
        .tensor("blk.0.attn_q.weight", &[32, 32], 8, &q8_0_blocks(32 * 32, 3))
        .tensor("blk.0.attn_k.weight", &[32, 16], 8, &q8_0_blocks(32 * 16, 4))
        .tensor("blk.0.attn_v.weight", &[32, 16], 8, &q8_0_blocks(32 * 16, 5))
        .tensor("blk.0.attn_output.weight", &[32, 32], 8, &q8_0_blocks(32 * 32, 6))
        .tensor("blk.0.ffn_norm.weight", &[32], 0, &norm(32, 7))
        .tensor("blk.0.ffn_gate.weight", &[32, 64], 8, &q8_0_blocks(32 * 64, 8))
        .tensor("blk.0.ffn_up.weight", &[32, 64], 8, &q8_0_blocks(32 * 64, 9))
        .tensor("blk.0.ffn_down.weight", &[64, 32], 8, &q8_0_blocks(64 * 32, 10))
        .tensor("output_norm.weight", &[32], 0, &norm(32, 11));
    TempFile::new(&b.bytes())
}

fn last_logits(model: &dyn engine::models::Model) -> Vec<f32> {
    let ids = Tensor::from_vec(vec![2i64, 4, 6, 7, 8, 9], &[1, 6]).unwrap();
    let input = engine::models::ForwardInput { input_ids: Some(&ids), ..Default::default() };
    model.forward(&input, None).unwrap().logits.unwrap().to_vec::<f32>().unwrap()
}

/// A hand-made LLaMA GGUF loads dense and packed to the same model, and saved as a Hugging Face
/// folder (weights, config, the file's tokenizer) it loads back to the same logits.
#[test]
fn tiny_llama_dense_packed_and_saved_folder_agree() {
    use engine::models::{load, save_pretrained, tokenizer::Tokenizer};
    let f = tiny_llama();
    let dense = load(&f.0).unwrap();
    let c = dense.config();
    assert_eq!(
        (c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim, c.vocab_size),
        (1, 32, 2, 1, 16, 10)
    );
    assert!(c.tie_word_embeddings);
    let want = last_logits(dense.as_ref());
    let packed = engine::io::gguf::llama::load_llama_packed(&f.0).unwrap();
    assert_close(&last_logits(packed.as_ref()), &want, "packed vs dense");

    let dir = std::env::temp_dir().join(format!("engine-gguf-saved-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    save_pretrained(dense.as_ref(), &dir, Some(&f.0)).unwrap();
    let saved = load(&dir).unwrap();
    assert_close(&last_logits(saved.as_ref()), &want, "saved folder vs GGUF");
    let tok = Tokenizer::from_dir(&dir).unwrap();
    assert_eq!(tok.encode("ab a12", true).unwrap(), Tokenizer::from_dir(&f.0).unwrap().encode("ab a12", true).unwrap());
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!(config["bos_token"], "<s>");
    std::fs::remove_dir_all(&dir).ok();
}
