//! Which modules an adapter wraps, by PEFT's rules (`check_target_module_exists`): a list matches a
//! module whose path equals an entry or ends with `.entry`; a string is a full-match regex;
//! `"all-linear"` is every Linear except the output head. `exclude_modules` removes matches, and
//! `layers_to_transform` keeps only modules inside the listed layer indices.
use crate::config::{Layers, StringOrList, TargetModules};
use engine::{Error, Result};
use regex::Regex;

/// The module-list names PEFT tries when `layers_pattern` is not given.
const DEFAULT_LAYER_PATTERNS: &[&str] = &["layers", "h", "blocks", "layer"];

/// A compiled `target_modules` / `exclude_modules` value.
pub enum Matcher {
    Names(Vec<String>),
    Regex(Regex),
    AllLinear,
}

impl Matcher {
    pub fn new(t: &TargetModules, what: &str) -> Result<Matcher> {
        Ok(match t {
            TargetModules::Pattern(p) if p == "all-linear" => Matcher::AllLinear,
            TargetModules::Pattern(p) => Matcher::Regex(
                Regex::new(&format!("^(?:{p})$"))
                    .map_err(|e| Error::invalid("peft", format!("{what}: bad regex `{p}`: {e}")))?,
            ),
            TargetModules::Names(n) => Matcher::Names(n.clone()),
        })
    }

    /// Whether `path` matches (`is_head` says whether it is an output head, which "all-linear" skips).
    pub fn matches(&self, path: &str, is_head: bool) -> bool {
        match self {
            Matcher::AllLinear => !is_head,
            Matcher::Regex(r) => r.is_match(path),
            Matcher::Names(names) => names.iter().any(|n| path == n || path.ends_with(&format!(".{n}"))),
        }
    }
}

/// The layer index of a module path under one of the layer-list names (`model.layers.3.mlp` → 3).
pub fn layer_index(path: &str, pattern: Option<&StringOrList>) -> Option<usize> {
    let names: Vec<&str> = match pattern {
        Some(StringOrList::One(s)) => vec![s.as_str()],
        Some(StringOrList::Many(v)) => v.iter().map(String::as_str).collect(),
        None => DEFAULT_LAYER_PATTERNS.to_vec(),
    };
    let parts: Vec<&str> = path.split('.').collect();
    for w in parts.windows(2) {
        if names.contains(&w[0]) {
            if let Ok(i) = w[1].parse::<usize>() {
                return Some(i);
            }
        }
    }
    None
}

/// Selects the module paths an adapter wraps from every Linear path of the model. A target that
/// matches nothing is an error listing the paths that exist.
pub fn select(
    paths: &[String],
    heads: &[String],
    targets: &TargetModules,
    exclude: Option<&TargetModules>,
    layers: Option<&Layers>,
    layers_pattern: Option<&StringOrList>,
) -> Result<Vec<String>> {
    let target = Matcher::new(targets, "target_modules")?;
    let exclude = exclude.map(|e| Matcher::new(e, "exclude_modules")).transpose()?;
    let selected: Vec<String> = paths
        .iter()
        .filter(|p| {
            let head = heads.contains(p);
            target.matches(p, head)
                && !exclude.as_ref().is_some_and(|e| e.matches(p, head))
                && layers.is_none_or(|l| layer_index(p, layers_pattern).is_some_and(|i| l.contains(i)))
        })
        .cloned()
        .collect();
    if selected.is_empty() {
        let shown: Vec<&str> = paths.iter().map(String::as_str).take(40).collect();
        return Err(Error::invalid(
            "peft",
            format!(
                "target_modules {targets:?} matched no Linear module. Linear modules of this model: {}{}",
                shown.join(", "),
                if paths.len() > 40 { format!(", … ({} in all)", paths.len()) } else { String::new() }
            ),
        ));
    }
    Ok(selected)
}
