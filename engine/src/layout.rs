//! Shape, strides and offset: how a tensor's elements sit in its storage. Every view (reshape,
//! transpose, permute, narrow, expand, squeeze, unsqueeze) is a new `Layout` over the same storage.
use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    shape: Vec<usize>,
    strides: Vec<usize>,
    offset: usize,
}

/// Row-major strides of a contiguous tensor of this shape.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; shape.len()];
    let mut acc = 1;
    for d in (0..shape.len()).rev() {
        strides[d] = acc;
        acc *= shape[d];
    }
    strides
}

/// The shape two operands broadcast to, by NumPy's rules (align right; 1 stretches).
pub fn broadcast_shapes(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i < rank - a.len() { 1 } else { a[i - (rank - a.len())] };
        let db = if i < rank - b.len() { 1 } else { b[i - (rank - b.len())] };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return Err(Error::shape(op, format!("shapes {a:?} and {b:?} cannot be broadcast together"))),
        };
    }
    Ok(out)
}

impl Layout {
    pub fn contiguous(shape: &[usize]) -> Self {
        Layout { shape: shape.to_vec(), strides: contiguous_strides(shape), offset: 0 }
    }

    pub fn new(shape: Vec<usize>, strides: Vec<usize>, offset: usize) -> Self {
        Layout { shape, strides, offset }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }
    pub fn offset(&self) -> usize {
        self.offset
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Row-major contiguous (dims of size 1 may have any stride).
    pub fn is_contiguous(&self) -> bool {
        let mut acc = 1;
        for d in (0..self.shape.len()).rev() {
            if self.shape[d] != 1 && self.strides[d] != acc {
                return false;
            }
            acc *= self.shape[d];
        }
        true
    }

    /// One past the largest storage index this layout touches (0 for an empty tensor).
    pub fn storage_extent(&self) -> usize {
        if self.numel() == 0 {
            return self.offset;
        }
        self.offset + self.shape.iter().zip(&self.strides).map(|(&n, &s)| (n - 1) * s).sum::<usize>() + 1
    }

    pub(crate) fn check_dim(&self, op: &'static str, dim: usize) -> Result<()> {
        if dim >= self.rank() {
            return Err(Error::Dim { op, dim, rank: self.rank() });
        }
        Ok(())
    }

    pub fn transpose(&self, d0: usize, d1: usize) -> Result<Self> {
        self.check_dim("transpose", d0)?;
        self.check_dim("transpose", d1)?;
        let mut l = self.clone();
        l.shape.swap(d0, d1);
        l.strides.swap(d0, d1);
        Ok(l)
    }

    pub fn permute(&self, dims: &[usize]) -> Result<Self> {
        let mut seen = vec![false; self.rank()];
        if dims.len() != self.rank() {
            return Err(Error::shape("permute", format!("{dims:?} is not a permutation of {} dims", self.rank())));
        }
        for &d in dims {
            if d >= self.rank() || seen[d] {
                return Err(Error::shape("permute", format!("{dims:?} is not a permutation of {} dims", self.rank())));
            }
            seen[d] = true;
        }
        Ok(Layout {
            shape: dims.iter().map(|&d| self.shape[d]).collect(),
            strides: dims.iter().map(|&d| self.strides[d]).collect(),
            offset: self.offset,
        })
    }

    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Self> {
        self.check_dim("narrow", dim)?;
        if start + len > self.shape[dim] {
            return Err(Error::shape(
                "narrow",
                format!("range {start}..{} out of bounds for dim {dim} of shape {:?}", start + len, self.shape),
            ));
        }
        let mut l = self.clone();
        l.offset += start * self.strides[dim];
        l.shape[dim] = len;
        Ok(l)
    }

    /// A view with a new shape over the same elements, when the strides allow it without a copy
    /// (torch's `view` rule: each group of merged dims must be contiguous among itself).
    pub fn reshape(&self, shape: &[usize]) -> Result<Self> {
        let numel: usize = shape.iter().product();
        if numel != self.numel() {
            return Err(Error::shape(
                "reshape",
                format!("cannot reshape {:?} ({} elements) to {shape:?} ({numel} elements)", self.shape, self.numel()),
            ));
        }
        if self.is_contiguous() {
            return Ok(Layout { shape: shape.to_vec(), strides: contiguous_strides(shape), offset: self.offset });
        }
        // Walk old and new dims in groups of equal element count; inside a group the old dims must be
        // mutually contiguous, and the new dims get strides carved from the group's innermost stride.
        let old: Vec<(usize, usize)> =
            self.shape.iter().copied().zip(self.strides.iter().copied()).filter(|&(n, _)| n != 1).collect();
        let mut new_strides = vec![0; shape.len()];
        let (mut oi, mut ni) = (0, 0);
        while ni < shape.len() || oi < old.len() {
            // skip size-1 new dims: any stride works
            if ni < shape.len() && shape[ni] == 1 {
                new_strides[ni] = 1;
                ni += 1;
                continue;
            }
            if oi >= old.len() || ni >= shape.len() {
                break;
            }
            let (mut o_size, mut n_size) = (old[oi].0, shape[ni]);
            let o_start = oi;
            let n_start = ni;
            while o_size != n_size {
                if o_size < n_size {
                    oi += 1;
                    if oi >= old.len() {
                        return Err(self.not_viewable(shape));
                    }
                    o_size *= old[oi].0;
                } else {
                    ni += 1;
                    if ni >= shape.len() {
                        return Err(self.not_viewable(shape));
                    }
                    n_size *= shape[ni];
                }
            }
            for k in o_start..oi {
                if old[k].1 != old[k + 1].1 * old[k + 1].0 {
                    return Err(self.not_viewable(shape));
                }
            }
            let mut stride = old[oi].1;
            for k in (n_start..=ni).rev() {
                new_strides[k] = stride;
                stride *= shape[k];
            }
            oi += 1;
            ni += 1;
        }
        Ok(Layout { shape: shape.to_vec(), strides: new_strides, offset: self.offset })
    }

    fn not_viewable(&self, shape: &[usize]) -> Error {
        Error::shape(
            "reshape",
            format!(
                "cannot view shape {:?} with strides {:?} as {shape:?} without a copy; call .contiguous() first",
                self.shape, self.strides
            ),
        )
    }

    /// Broadcast to `shape` (NumPy rules): new leading dims and stretched size-1 dims get stride 0.
    pub fn broadcast_as(&self, shape: &[usize]) -> Result<Self> {
        if shape.len() < self.rank() {
            return Err(Error::shape("broadcast_as", format!("cannot broadcast {:?} to {shape:?}", self.shape)));
        }
        let lead = shape.len() - self.rank();
        let mut strides = vec![0; shape.len()];
        for d in 0..self.rank() {
            let (from, to) = (self.shape[d], shape[lead + d]);
            strides[lead + d] = if from == to {
                self.strides[d]
            } else if from == 1 {
                0
            } else {
                return Err(Error::shape("broadcast_as", format!("cannot broadcast {:?} to {shape:?}", self.shape)));
            };
        }
        Ok(Layout { shape: shape.to_vec(), strides, offset: self.offset })
    }

    pub fn squeeze(&self, dim: usize) -> Result<Self> {
        self.check_dim("squeeze", dim)?;
        if self.shape[dim] != 1 {
            return Err(Error::shape("squeeze", format!("dim {dim} of {:?} is not 1", self.shape)));
        }
        let mut l = self.clone();
        l.shape.remove(dim);
        l.strides.remove(dim);
        Ok(l)
    }

    pub fn unsqueeze(&self, dim: usize) -> Result<Self> {
        if dim > self.rank() {
            return Err(Error::Dim { op: "unsqueeze", dim, rank: self.rank() });
        }
        let mut l = self.clone();
        let stride = if dim < self.rank() { self.strides[dim] * self.shape[dim] } else { 1 };
        l.shape.insert(dim, 1);
        l.strides.insert(dim, stride);
        Ok(l)
    }

    /// Storage index of every element in row-major order (for gathers over arbitrary views).
    pub fn storage_indices(&self) -> StridedIndex<'_> {
        StridedIndex::new(self)
    }
}

/// Iterates the storage indices of a layout in row-major element order.
pub struct StridedIndex<'a> {
    layout: &'a Layout,
    index: Vec<usize>,
    next: Option<usize>,
}

impl<'a> StridedIndex<'a> {
    fn new(layout: &'a Layout) -> Self {
        let next = if layout.numel() == 0 { None } else { Some(layout.offset) };
        StridedIndex { layout, index: vec![0; layout.rank()], next }
    }
}

impl Iterator for StridedIndex<'_> {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        let current = self.next?;
        let mut pos = current;
        let mut d = self.layout.rank();
        loop {
            if d == 0 {
                self.next = None;
                break;
            }
            d -= 1;
            self.index[d] += 1;
            pos += self.layout.strides[d];
            if self.index[d] < self.layout.shape[d] {
                self.next = Some(pos);
                break;
            }
            pos -= self.layout.strides[d] * self.layout.shape[d];
            self.index[d] = 0;
        }
        Some(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_views_follow_torch_rules() {
        let l = Layout::contiguous(&[2, 3, 4]);
        let t = l.transpose(0, 1).unwrap(); // [3,2,4] strides [4,12,1]
        assert!(t.reshape(&[3, 8]).is_err());
        let ok = t.reshape(&[3, 2, 2, 2]).unwrap();
        assert_eq!(ok.strides(), &[4, 12, 2, 1]);
        let idx: Vec<usize> = t.storage_indices().take(6).collect();
        assert_eq!(idx, vec![0, 1, 2, 3, 12, 13]);
    }

    #[test]
    fn broadcasting() {
        assert_eq!(broadcast_shapes("t", &[3, 1, 5], &[4, 1]).unwrap(), vec![3, 4, 5]);
        assert!(broadcast_shapes("t", &[3, 2], &[3]).is_err());
        let l = Layout::contiguous(&[4, 1]).broadcast_as(&[3, 4, 5]).unwrap();
        assert_eq!(l.strides(), &[0, 1, 0]);
    }
}
