//! Prefix adapters on disk, in PEFT's format both ways: `adapter_config.json`,
//! `adapter_model.safetensors` with `prompt_embeddings` (the projected table `[P, layers·2·token_dim]`,
//! what PEFT saves and loads) and the `modules_to_save` heads (`base_model.classifier.weight`), and
//! beside them [`ENCODER_FILE`]: the prompt encoder's own parameters under PEFT's names
//! (`prompt_encoder.default.embedding.weight`, `….transform.0.weight`, …), which PEFT does not keep,
//! so that training with `prefix_projection` resumes exactly. A PEFT folder without that file loads
//! the table as a flat prefix.
use super::config::PrefixTuningConfig;
use super::encoder::PrefixEncoder;
use super::model::{PrefixModel, BASE_KEY_PREFIX, ENCODER_KEY_PREFIX};
use engine::io::{save_safetensors, SafeTensors};
use engine::models::Model;
use engine::{Error, Result, Tensor};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// The reparameterization (prompt encoder) weights beside PEFT's files.
pub const ENCODER_FILE: &str = "prompt_encoder.safetensors";
const ADAPTER_FILE: &str = "adapter_model.safetensors";
const CONFIG_FILE: &str = "adapter_config.json";
/// PEFT's key of the saved table.
pub const PROMPT_EMBEDDINGS: &str = "prompt_embeddings";

fn pt_metadata() -> BTreeMap<String, String> {
    BTreeMap::from([("format".to_string(), "pt".to_string())])
}

/// Writes the adapter as PEFT writes it, plus [`ENCODER_FILE`] with a projection; each file atomically.
pub fn save(model: &PrefixModel, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Io { path: dir.display().to_string(), source: e })?;
    let table = {
        let _g = engine::no_grad();
        model.encoder().table()?.detach().contiguous()?
    };
    let mut tensors = vec![(PROMPT_EMBEDDINGS.to_string(), table)];
    for (path, head) in model.heads() {
        tensors.push((format!("{BASE_KEY_PREFIX}{path}.weight"), head.weight.detach().contiguous()?));
        if let Some(b) = &head.bias {
            tensors.push((format!("{BASE_KEY_PREFIX}{path}.bias"), b.detach().contiguous()?));
        }
    }
    save_safetensors(dir.join(ADAPTER_FILE), &tensors, Some(&pt_metadata()))?;
    let encoder = model.encoder();
    if encoder.projection.is_some() {
        let named: Vec<(String, Tensor)> = encoder
            .named_tensors()
            .into_iter()
            .map(|(n, t)| Ok((format!("{ENCODER_KEY_PREFIX}{n}"), t.detach().contiguous()?)))
            .collect::<Result<_>>()?;
        save_safetensors(dir.join(ENCODER_FILE), &named, Some(&pt_metadata()))?;
    } else if dir.join(ENCODER_FILE).exists() {
        // A stale encoder from an earlier save into this folder would no longer match the table.
        std::fs::remove_file(dir.join(ENCODER_FILE))
            .map_err(|e| Error::Io { path: dir.join(ENCODER_FILE).display().to_string(), source: e })?;
    }
    let mut config = model.prefix_config().clone();
    config.common.inference_mode = true;
    let json = serde_json::to_vec_pretty(&config.to_json())
        .map_err(|e| Error::invalid("save_adapter", format!("cannot encode the config: {e}")))?;
    engine::io::safetensors::write_atomic(&dir.join(CONFIG_FILE), &json)
}

/// Loads a prefix adapter folder on `base` (PEFT's, or ours with [`ENCODER_FILE`]).
pub fn load(base: Box<dyn Model>, dir: &Path, trainable: bool) -> Result<(PrefixModel, Vec<String>)> {
    let (mut config, mut warnings) = PrefixTuningConfig::from_file(&dir.join(CONFIG_FILE))?;
    let file_err = |file: &SafeTensors, detail: String| Error::File { path: file.path().display().to_string(), detail };
    let shape = config
        .fill_from_model(base.config())
        .map_err(|e| Error::File { path: dir.join(CONFIG_FILE).display().to_string(), detail: e.to_string() })?;
    let file = SafeTensors::open(dir.join(ADAPTER_FILE))?;
    if !file.contains(PROMPT_EMBEDDINGS) {
        return Err(file_err(&file, format!("missing `{PROMPT_EMBEDDINGS}`")));
    }
    let table = file.tensor_f32(PROMPT_EMBEDDINGS)?;
    let want = [shape.num_virtual_tokens, shape.table_width()];
    if table.shape() != want {
        return Err(file_err(
            &file,
            format!("`{PROMPT_EMBEDDINGS}` has shape {:?}, the config implies {want:?}", table.shape()),
        ));
    }
    let encoder_path = dir.join(ENCODER_FILE);
    let encoder = if encoder_path.is_file() {
        let enc_file = SafeTensors::open(&encoder_path)?;
        let mut get = |n: &str| {
            let key = format!("{ENCODER_KEY_PREFIX}{n}");
            if enc_file.contains(&key) {
                enc_file.tensor_f32(&key).map(Some)
            } else {
                Ok(None)
            }
        };
        let encoder =
            PrefixEncoder::from_named(shape, &mut get, trainable).map_err(|e| file_err(&enc_file, e.to_string()))?;
        if encoder.projection.is_some() != config.prefix_projection {
            return Err(file_err(
                &enc_file,
                format!(
                    "holds {} but the config has prefix_projection = {}",
                    if encoder.projection.is_some() { "a projection" } else { "no projection" },
                    config.prefix_projection
                ),
            ));
        }
        check_matches_table(&encoder, &table).map_err(|e| file_err(&enc_file, e))?;
        encoder
    } else {
        if config.prefix_projection {
            warnings.push(format!(
                "{}: no {ENCODER_FILE} (PEFT does not save the reparameterization): the saved table is used as a \
                 flat prefix{}",
                dir.display(),
                if trainable { ", and training continues on the table itself" } else { "" }
            ));
        }
        let mut get = |n: &str| Ok((n == super::encoder::EMBEDDING).then(|| table.clone()));
        PrefixEncoder::from_named(shape, &mut get, trainable)?
    };
    let model = PrefixModel::assemble(base, config, encoder, trainable)?;
    let mut used: HashSet<String> = HashSet::from([PROMPT_EMBEDDINGS.to_string()]);
    let mut values = BTreeMap::new();
    for path in model.heads().keys() {
        for (part, required) in [("weight", true), ("bias", false)] {
            let key = format!("{BASE_KEY_PREFIX}{path}.{part}");
            if file.contains(&key) {
                values.insert(format!("{path}.{part}"), file.tensor_f32(&key)?);
                used.insert(key);
            } else if required {
                return Err(file_err(&file, format!("missing `{key}` (the trained `{path}` of modules_to_save)")));
            }
        }
    }
    model.load_head_values(&values).map_err(|e| file_err(&file, e.to_string()))?;
    let unused: Vec<&str> = file.names().filter(|n| !used.contains(*n)).collect();
    if !unused.is_empty() {
        warnings.push(format!("{} tensors of the adapter file were not used: {}", unused.len(), unused.join(", ")));
    }
    Ok((model, warnings))
}

/// The encoder beside a PEFT table must reproduce it (else the two files are from different runs).
fn check_matches_table(encoder: &PrefixEncoder, table: &Tensor) -> std::result::Result<(), String> {
    let _g = engine::no_grad();
    let ours = encoder.table().and_then(|t| t.to_vec_f32()).map_err(|e| e.to_string())?;
    let saved = table.to_vec_f32().map_err(|e| e.to_string())?;
    let worst = ours.iter().zip(&saved).map(|(a, b)| (a - b).abs() / (1.0 + b.abs())).fold(0.0f32, f32::max);
    if worst > 1e-4 {
        return Err(format!(
            "the prompt encoder does not reproduce {PROMPT_EMBEDDINGS} (relative difference {worst:e}): the files \
             are from different saves"
        ));
    }
    Ok(())
}
