//! Reading, writing and rejecting safetensors files.
use engine::io::{save_safetensors, SafeTensors, WeightFiles};
use engine::{DType, Tensor};
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    std::env::var("PEFT_FIXTURES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("tests").join("fixtures"))
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("engine-safetensors-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn reads_a_transformers_checkpoint_in_place() {
    let w = WeightFiles::open(fixtures().join("models/bert")).unwrap();
    let t = w.tensor("embeddings.word_embeddings.weight").unwrap();
    assert_eq!(t.dtype(), DType::F32);
    assert!(t.is_memory_mapped(), "f32 weights should borrow the file mapping");
    assert_eq!(t.rank(), 2);
    assert!(w.get("embeddings.word_embeddings.weight", &[1, 1]).unwrap_err().to_string().contains("expected [1, 1]"));
    let err = w.tensor("no.such.weight").unwrap_err().to_string();
    assert!(err.contains("no tensor named `no.such.weight`") && err.contains("model.safetensors"), "{err}");
    // writing to a mapped tensor copies it first; the file stays as it was
    let before = t.to_vec::<f32>().unwrap();
    t.update_in_place::<f32>(|d| d[0] += 1.0).unwrap();
    assert!(!t.is_memory_mapped());
    let again = WeightFiles::open(fixtures().join("models/bert")).unwrap();
    assert_eq!(again.tensor("embeddings.word_embeddings.weight").unwrap().to_vec::<f32>().unwrap(), before);
}

#[test]
fn round_trips_every_dtype_atomically() {
    let dir = tmpdir("roundtrip");
    let path = dir.join("t.safetensors");
    let f = Tensor::randn(&[3, 5], 0.0, 1.0, 1).unwrap();
    let tensors = vec![
        ("f32".to_string(), f.clone()),
        ("f32_t".to_string(), f.t().unwrap()),
        ("bf16".to_string(), f.to_dtype(DType::BF16).unwrap()),
        ("f16".to_string(), f.to_dtype(DType::F16).unwrap()),
        ("u8".to_string(), Tensor::from_vec(vec![1u8, 2, 3], &[3]).unwrap()),
        ("i64".to_string(), Tensor::from_vec(vec![-1i64, 7], &[1, 2]).unwrap()),
        ("scalar".to_string(), Tensor::scalar(2.5)),
    ];
    let mut meta = std::collections::BTreeMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    save_safetensors(&path, &tensors, Some(&meta)).unwrap();
    let leftovers: Vec<_> =
        std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name() != "t.safetensors").collect();
    assert!(leftovers.is_empty(), "temporary files left behind");
    let st = SafeTensors::open(&path).unwrap();
    assert_eq!(st.metadata().get("format").map(String::as_str), Some("pt"));
    for (name, t) in &tensors {
        let back = st.tensor(name).unwrap();
        assert_eq!(back.dtype(), t.dtype(), "{name}");
        assert_eq!(back.shape(), t.shape(), "{name}");
        assert_eq!(back.to_vec_f32().unwrap(), t.to_vec_f32().unwrap(), "{name}");
        assert!(back.is_memory_mapped(), "{name}: the writer aligns data, so every dtype maps in place");
    }
    assert!(save_safetensors(dir.join("dup.safetensors"), &[("a".into(), f.clone()), ("a".into(), f)], None).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

/// A file from a header JSON and a data section.
fn file(header: &str, data_len: usize) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend(std::iter::repeat_n(0u8, data_len));
    b
}

#[test]
fn malformed_files_are_clear_errors() {
    let dir = tmpdir("malformed");
    let ok_entry = r#""a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#;
    let mut past_end = file(&format!("{{{ok_entry}}}"), 8);
    past_end[..8].copy_from_slice(&1_000_000u64.to_le_bytes());
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "too short for the 8-byte header length"),
        ("truncated header length", vec![1, 2, 3], "too short"),
        ("header length past the end", past_end, "runs past the end of the file"),
        ("header not JSON", file("{not json", 0), "not valid JSON"),
        ("header not an object", file("[1,2]", 0), "not a JSON object"),
        (
            "unknown dtype",
            file(r#"{"a":{"dtype":"F8_E9M9","shape":[1],"data_offsets":[0,1]}}"#, 1),
            "unknown or unsupported dtype `F8_E9M9`",
        ),
        ("missing shape", file(r#"{"a":{"dtype":"F32","data_offsets":[0,4]}}"#, 4), "missing `shape`"),
        ("offsets out of range", file(r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, 8), "out of range"),
        ("start after end", file(r#"{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}"#, 8), "out of range"),
        ("shape/size mismatch", file(r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, 8), "needs 12 bytes"),
        (
            "overlapping tensors",
            file(&format!(r#"{{{ok_entry},"b":{{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}}}"#), 12),
            "overlap",
        ),
    ];
    for (what, bytes, expect) in cases {
        let path = dir.join("bad.safetensors");
        std::fs::write(&path, &bytes).unwrap();
        let err = match SafeTensors::open(&path) {
            Ok(_) => panic!("{what}: accepted a malformed file"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(expect), "{what}: error `{err}` should mention `{expect}`");
        assert!(err.contains("bad.safetensors"), "{what}: error `{err}` should name the file");
    }
    assert!(SafeTensors::open(dir.join("missing.safetensors"))
        .unwrap_err()
        .to_string()
        .contains("missing.safetensors"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sharded_checkpoints_follow_the_index() {
    let dir = tmpdir("sharded");
    let a = Tensor::randn(&[2, 3], 0.0, 1.0, 1).unwrap();
    let b = Tensor::randn(&[4], 0.0, 1.0, 2).unwrap();
    save_safetensors(dir.join("model-00001-of-00002.safetensors"), &[("x.a".into(), a.clone())], None).unwrap();
    save_safetensors(dir.join("model-00002-of-00002.safetensors"), &[("x.b".into(), b.clone())], None).unwrap();
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        r#"{"metadata":{},"weight_map":{"x.a":"model-00001-of-00002.safetensors","x.b":"model-00002-of-00002.safetensors"}}"#,
    )
    .unwrap();
    let w = WeightFiles::open(&dir).unwrap();
    assert_eq!(w.tensor("x.a").unwrap().to_vec::<f32>().unwrap(), a.to_vec::<f32>().unwrap());
    assert_eq!(w.tensor("x.b").unwrap().to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        r#"{"weight_map":{"x.c":"model-00001-of-00002.safetensors"}}"#,
    )
    .unwrap();
    let err = WeightFiles::open(&dir).unwrap_err().to_string();
    assert!(err.contains("x.c"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
