//! Walking strided operands row by row. Elementwise kernels coalesce the dims of all operands
//! (merging neighbours that are contiguous in every operand), then run a SIMD loop over the last dim
//! for each "row" of the rest, splitting rows across rayon threads.
use crate::layout::Layout;
use rayon::prelude::*;

/// Below this many elements per task, splitting across threads costs more than it saves.
pub(crate) const MIN_PAR_ELEMS: usize = 1 << 15;

/// Shape and per-operand strides after dropping size-1 dims and merging mergeable neighbours.
/// Never empty: a scalar becomes shape `[1]`.
pub(crate) fn coalesce(shape: &[usize], strides: &[&[usize]]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let mut out_shape: Vec<usize> = Vec::with_capacity(shape.len());
    let mut out_strides: Vec<Vec<usize>> = vec![Vec::with_capacity(shape.len()); strides.len()];
    for d in 0..shape.len() {
        if shape[d] == 1 {
            continue;
        }
        if let Some(&last) = out_shape.last() {
            let k = out_shape.len() - 1;
            let mergeable = strides.iter().enumerate().all(|(o, s)| out_strides[o][k] == s[d] * shape[d]);
            if mergeable {
                out_shape[k] = last * shape[d];
                for (o, s) in strides.iter().enumerate() {
                    out_strides[o][k] = s[d];
                }
                continue;
            }
        }
        out_shape.push(shape[d]);
        for (o, s) in strides.iter().enumerate() {
            out_strides[o].push(s[d]);
        }
    }
    if out_shape.is_empty() {
        out_shape.push(1);
        for s in out_strides.iter_mut() {
            s.push(0);
        }
    }
    (out_shape, out_strides)
}

/// Storage offsets of each operand at the start of rows `first..first+count` of a coalesced
/// iteration space (`outer` = all dims but the last).
pub(crate) struct RowOffsets<'a> {
    outer: &'a [usize],
    strides: &'a [Vec<usize>],
    index: Vec<usize>,
    offsets: Vec<usize>,
}

impl<'a> RowOffsets<'a> {
    pub(crate) fn new(outer: &'a [usize], strides: &'a [Vec<usize>], base: &[usize], first_row: usize) -> Self {
        let mut index = vec![0; outer.len()];
        let mut rem = first_row;
        for d in (0..outer.len()).rev() {
            index[d] = rem % outer[d];
            rem /= outer[d];
        }
        let offsets = (0..strides.len())
            .map(|o| base[o] + index.iter().zip(&strides[o]).map(|(i, s)| i * s).sum::<usize>())
            .collect();
        RowOffsets { outer, strides, index, offsets }
    }

    pub(crate) fn current(&self) -> &[usize] {
        &self.offsets
    }

    pub(crate) fn advance(&mut self) {
        for d in (0..self.outer.len()).rev() {
            self.index[d] += 1;
            for (o, off) in self.offsets.iter_mut().enumerate() {
                *off += self.strides[o][d];
            }
            if self.index[d] < self.outer[d] {
                return;
            }
            for (o, off) in self.offsets.iter_mut().enumerate() {
                *off -= self.strides[o][d] * self.outer[d];
            }
            self.index[d] = 0;
        }
    }
}

/// Fills a fresh contiguous output of `shape` row by row. `row(out_row, offsets, strides)` gets each
/// input's storage offset at the row start and its stride along the row.
pub(crate) fn map_rows<const N: usize>(
    shape: &[usize],
    layouts: [&Layout; N],
    row: impl Fn(&mut [f32], [usize; N], [usize; N]) + Sync,
) -> Vec<f32> {
    let numel: usize = shape.iter().product();
    let mut out = crate::cpu::pool::alloc_f32(numel);
    if numel == 0 {
        return out;
    }
    let strides: Vec<&[usize]> = layouts.iter().map(|l| l.strides()).collect();
    let (cshape, cstrides) = coalesce(shape, &strides);
    let (outer, inner) = cshape.split_at(cshape.len() - 1);
    let n = inner[0];
    let inner_strides: [usize; N] = std::array::from_fn(|o| cstrides[o][cshape.len() - 1]);
    let outer_strides: Vec<Vec<usize>> = cstrides.iter().map(|s| s[..s.len() - 1].to_vec()).collect();
    let base: Vec<usize> = layouts.iter().map(|l| l.offset()).collect();

    let rows = numel / n;
    // Long rows are cut into pieces so that a single row still spreads over the threads.
    let piece = if rows == 1 { n.div_ceil(rayon::current_num_threads().max(1)).max(MIN_PAR_ELEMS) } else { n };
    let rows_per_task = (MIN_PAR_ELEMS / n).max(1);
    let run = |task: usize, chunk: &mut [f32]| {
        if rows == 1 {
            let start = task * piece;
            let offsets: [usize; N] = std::array::from_fn(|o| base[o] + start * inner_strides[o]);
            row(chunk, offsets, inner_strides);
            return;
        }
        let first = task * rows_per_task;
        let mut it = RowOffsets::new(outer, &outer_strides, &base, first);
        for out_row in chunk.chunks_mut(n) {
            let offsets: [usize; N] = std::array::from_fn(|o| it.current()[o]);
            row(out_row, offsets, inner_strides);
            it.advance();
        }
    };
    let chunk_len = if rows == 1 { piece } else { rows_per_task * n };
    if numel >= 2 * MIN_PAR_ELEMS {
        out.par_chunks_mut(chunk_len).enumerate().for_each(|(t, c)| run(t, c));
    } else {
        out.chunks_mut(chunk_len).enumerate().for_each(|(t, c)| run(t, c));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesces_contiguous_and_broadcast_dims() {
        // [2,3,4] contiguous + [4] broadcast → outer 6 rows of 4
        let (s, st) = coalesce(&[2, 3, 4], &[&[12, 4, 1], &[0, 0, 1]]);
        assert_eq!(s, vec![6, 4]);
        assert_eq!(st, vec![vec![4, 1], vec![0, 1]]);
        let (s, _) = coalesce(&[2, 3, 4], &[&[12, 4, 1], &[12, 4, 1]]);
        assert_eq!(s, vec![24]);
    }
}
