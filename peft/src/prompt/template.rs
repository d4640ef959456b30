//! P-tuning's template (Liu et al. 2021, beyond PEFT, which only prepends): virtual tokens placed
//! between the input's segments. `template = [a0, a1, …, ak]` puts a0 virtual tokens before the first
//! segment, a1 after it, …, ak after the last; the counts add up to `num_virtual_tokens` and the
//! prompt's rows are used in order. An input's segments are the runs of equal `token_type_ids` over
//! its real tokens (a text pair gives two; without segment ids the whole input is one), so a row must
//! have exactly k segments. Padding stays at the end of each row.
use engine::{DType, Error, Result, Tensor};

/// What sits at one position of the assembled sequence.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Slot {
    /// Row `j` of the prompt.
    Virtual(usize),
    /// Position `i` of the input (real token or padding).
    Token(usize),
}

/// Where every virtual and input position goes, per row.
pub struct Layout {
    rows: Vec<Vec<Slot>>,
    /// Real (not padding) tokens per row.
    real: Vec<usize>,
    /// Input length (padded).
    t: usize,
}

/// Runs of equal values: `(start, len)` over `types[..len]`.
fn runs(types: &[i64]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (i, &x) in types.iter().enumerate() {
        match out.last_mut() {
            Some((s, l)) if types[*s] == x => *l += 1,
            _ => out.push((i, 1)),
        }
    }
    out
}

impl Layout {
    /// The layout of a `[b, t]` batch: `real[r]` real tokens in row `r` (the rest is padding),
    /// `types` its segment ids (`b·t` values) if any.
    pub fn new(template: &[usize], b: usize, t: usize, real: &[usize], types: Option<&[i64]>) -> Result<Layout> {
        let k = template.len().saturating_sub(1);
        let mut rows = Vec::with_capacity(b);
        for r in 0..b {
            let len = real[r].min(t);
            let segments = match types {
                Some(ty) => runs(&ty[r * t..r * t + len]),
                None => vec![(0, len)],
            };
            if segments.len() != k {
                return Err(Error::invalid(
                    "P-tuning template",
                    format!(
                        "row {r} has {} segment(s) (runs of token_type_ids) but the template {template:?} places \
                         virtual tokens around {k}",
                        segments.len()
                    ),
                ));
            }
            let mut slots = Vec::with_capacity(t + template.iter().sum::<usize>());
            let mut next_virtual = 0;
            for (g, &count) in template.iter().enumerate() {
                slots.extend((next_virtual..next_virtual + count).map(Slot::Virtual));
                next_virtual += count;
                if let Some(&(start, l)) = segments.get(g) {
                    slots.extend((start..start + l).map(Slot::Token));
                }
            }
            slots.extend((len..t).map(Slot::Token));
            rows.push(slots);
        }
        Ok(Layout { rows, real: real.iter().map(|&n| n.min(t)).collect(), t })
    }

    /// `[b, n + t, d]`: prompt rows and input embeddings in their places.
    pub fn embeds(&self, prompt: &Tensor, input: &Tensor) -> Result<Tensor> {
        let mut rows = Vec::with_capacity(self.rows.len());
        for (r, slots) in self.rows.iter().enumerate() {
            let row_input = input.narrow(0, r, 1)?.reshape(&input.shape()[1..])?;
            let pieces = self.runs_of(slots, prompt, &row_input)?;
            let refs: Vec<&Tensor> = pieces.iter().collect();
            rows.push(Tensor::cat(&refs, 0)?);
        }
        let refs: Vec<&Tensor> = rows.iter().collect();
        Tensor::stack(&refs, 0)
    }

    /// Consecutive slots of one kind as narrowed pieces of `prompt` / `input` (dim 0).
    fn runs_of(&self, slots: &[Slot], prompt: &Tensor, input: &Tensor) -> Result<Vec<Tensor>> {
        let mut pieces = Vec::new();
        let mut i = 0;
        while i < slots.len() {
            let mut j = i + 1;
            let contiguous = |a: Slot, b: Slot| match (a, b) {
                (Slot::Virtual(x), Slot::Virtual(y)) | (Slot::Token(x), Slot::Token(y)) => y == x + 1,
                _ => false,
            };
            while j < slots.len() && contiguous(slots[j - 1], slots[j]) {
                j += 1;
            }
            pieces.push(match slots[i] {
                Slot::Virtual(v) => prompt.narrow(0, v, j - i)?,
                Slot::Token(p) => input.narrow(0, p, j - i)?,
            });
            i = j;
        }
        Ok(pieces)
    }

    /// A `[b, n + t]` integer tensor: `values` (`b·t`, the input's) at token slots, `virtual_value(row,
    /// position in the assembled row)` at virtual ones.
    pub fn ints(&self, values: &[i64], dtype: DType, virtual_value: impl Fn(usize, usize) -> i64) -> Result<Tensor> {
        let mut out = Vec::new();
        for (r, slots) in self.rows.iter().enumerate() {
            for (q, s) in slots.iter().enumerate() {
                out.push(match s {
                    Slot::Token(p) => values[r * self.t + p],
                    Slot::Virtual(_) => virtual_value(r, q),
                });
            }
        }
        let width = self.rows.first().map_or(0, Vec::len);
        Tensor::from_vec(out, &[self.rows.len(), width])?.to_dtype(dtype)
    }

    /// The segment id a virtual position gets: that of the real token after it (of the last one
    /// before it at the end of a row), so BERT's segment embedding groups it with its segment.
    pub fn virtual_type(&self, types: &[i64], r: usize, q: usize) -> i64 {
        let slots = &self.rows[r];
        let real = |s: &Slot| match s {
            Slot::Token(p) if *p < self.real[r] => Some(*p),
            _ => None,
        };
        let after = slots[q..].iter().find_map(real);
        let before = slots[..q].iter().rev().find_map(real);
        after.or(before).map_or(0, |p| types[r * self.t + p])
    }

    /// The input positions' rows of a `[b, n + t, …]` output, in input order: `[b, t, …]`.
    pub fn real(&self, full: &Tensor) -> Result<Tensor> {
        let mut rows = Vec::with_capacity(self.rows.len());
        for (r, slots) in self.rows.iter().enumerate() {
            let row = full.narrow(0, r, 1)?.reshape(&full.shape()[1..])?;
            // Token slots appear in increasing order: their positions, cut into contiguous runs.
            let mut pieces = Vec::new();
            let mut q = 0;
            while q < slots.len() {
                if let Slot::Token(_) = slots[q] {
                    let mut e = q + 1;
                    while e < slots.len() && matches!(slots[e], Slot::Token(_)) {
                        e += 1;
                    }
                    pieces.push(row.narrow(0, q, e - q)?);
                    q = e;
                } else {
                    q += 1;
                }
            }
            let refs: Vec<&Tensor> = pieces.iter().collect();
            rows.push(Tensor::cat(&refs, 0)?);
        }
        let refs: Vec<&Tensor> = rows.iter().collect();
        Tensor::stack(&refs, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_template() {
        // one row: segments [0,0][1,1,1] then one padding position; template [1, 2, 1]
        let types = [0, 0, 1, 1, 1, 0];
        let l = Layout::new(&[1, 2, 1], 1, 6, &[5], Some(&types)).unwrap();
        use Slot::*;
        assert_eq!(
            l.rows[0],
            vec![
                Virtual(0),
                Token(0),
                Token(1),
                Virtual(1),
                Virtual(2),
                Token(2),
                Token(3),
                Token(4),
                Virtual(3),
                Token(5)
            ]
        );
        assert_eq!(l.virtual_type(&types, 0, 3), 1);
        assert_eq!(l.virtual_type(&types, 0, 8), 1);
        assert!(Layout::new(&[1, 1], 1, 6, &[5], Some(&types)).is_err(), "two segments, a one-segment template");
        assert_eq!(runs(&[4, 4, 7]), vec![(0, 2), (2, 1)]);
    }
}
