//! A reader for the `.entry` declarations of a PTX module: names and parameter types, which is what a
//! launch has to agree with. Only the forms NVRTC emits are accepted; anything else is an error.

/// One `.param` of an entry: its PTX type (`.u64`, `.u32`, `.f32`, `.b8` for a byte array) and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PtxParam {
    pub ty: String,
    pub bytes: usize,
}

/// A kernel entry point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub params: Vec<PtxParam>,
}

/// All `.entry` declarations of `ptx`, in order.
pub fn entries(ptx: &str) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    let mut rest = ptx;
    while let Some(at) = rest.find(".entry ") {
        let after = &rest[at + ".entry ".len()..];
        let open = after.find('(').ok_or("`.entry` without `(`")?;
        let close = after.find(')').ok_or("`.entry` without `)`")?;
        let name = after[..open].trim().to_string();
        let mut params = Vec::new();
        for decl in after[open + 1..close].split(',').map(str::trim).filter(|d| !d.is_empty()) {
            params.push(param(decl).map_err(|e| format!("{name}: {e}"))?);
        }
        out.push(Entry { name, params });
        rest = &after[close..];
    }
    Ok(out)
}

/// `.param .u64 NAME` or `.param .align A .b8 NAME[N]`.
fn param(decl: &str) -> Result<PtxParam, String> {
    let words: Vec<&str> = decl.split_whitespace().collect();
    match words.as_slice() {
        [".param", ty, _name] => {
            let bytes = match *ty {
                ".u64" | ".s64" | ".b64" | ".f64" => 8,
                ".u32" | ".s32" | ".b32" | ".f32" => 4,
                other => return Err(format!("unknown parameter type {other}")),
            };
            Ok(PtxParam { ty: ty.to_string(), bytes })
        }
        [".param", ".align", _, ".b8", name] => {
            let open = name.find('[').ok_or_else(|| format!("byte array without size: {decl}"))?;
            let n = name[open + 1..name.len() - 1].parse().map_err(|_| format!("bad array size: {decl}"))?;
            Ok(PtxParam { ty: ".b8".into(), bytes: n })
        }
        _ => Err(format!("unrecognised parameter declaration: {decl}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_scalar_pointer_and_struct_params() {
        let ptx = ".visible .entry f(\n\t.param .u64 f_param_0,\n\t.param .align 8 .b8 f_param_1[152],\n\t\
                   .param .f32 f_param_2\n)\n{\n}\n.visible .entry g(\n)\n{\n}\n";
        let e = entries(ptx).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].name, "f");
        let p: Vec<_> = e[0].params.iter().map(|p| (p.ty.as_str(), p.bytes)).collect();
        assert_eq!(p, vec![(".u64", 8), (".b8", 152), (".f32", 4)]);
        assert!(e[1].params.is_empty());
        assert!(entries(".entry h(\n.param .u16 x\n)").is_err());
    }
}
