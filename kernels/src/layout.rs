//! The by-value `Layout` parameter of the elementwise kernels (`struct Layout` in `kernels/cu/common.cuh`).

/// Most dims an elementwise kernel takes (`MAX_DIMS` in common.cuh); the host merges or rejects more.
pub const MAX_DIMS: usize = 6;

/// Shape and element strides of two inputs, row-major over `shape[..ndim]`; broadcasting is stride 0.
/// Same field order, types and size (152 bytes, align 8) as the C struct; unused dims are zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    pub shape: [u64; MAX_DIMS],
    pub stride_a: [i64; MAX_DIMS],
    pub stride_b: [i64; MAX_DIMS],
    pub ndim: u32,
    pub pad: u32,
}

impl Layout {
    /// `None` when there are more than [`MAX_DIMS`] dims or the lists differ in length.
    pub fn new(shape: &[usize], stride_a: &[isize], stride_b: &[isize]) -> Option<Layout> {
        if shape.len() > MAX_DIMS || stride_a.len() != shape.len() || stride_b.len() != shape.len() {
            return None;
        }
        let mut l = Layout { ndim: shape.len() as u32, ..Layout::default() };
        for d in 0..shape.len() {
            l.shape[d] = shape[d] as u64;
            l.stride_a[d] = stride_a[d] as i64;
            l.stride_b[d] = stride_b[d] as i64;
        }
        Some(l)
    }

    /// Element offsets of linear index `i` in the two inputs: the kernel's `strided_offsets`, for tests.
    pub fn offsets(&self, mut i: u64) -> (i64, i64) {
        let (mut a, mut b) = (0i64, 0i64);
        for d in (0..self.ndim as usize).rev() {
            let c = i % self.shape[d];
            i /= self.shape[d];
            a += c as i64 * self.stride_a[d];
            b += c as i64 * self.stride_b[d];
        }
        (a, b)
    }

    /// The struct's bytes, as the launcher passes them.
    pub fn to_bytes(&self) -> [u8; std::mem::size_of::<Layout>()] {
        let mut out = [0u8; std::mem::size_of::<Layout>()];
        let mut put = |at: usize, v: [u8; 8]| out[at..at + 8].copy_from_slice(&v);
        for d in 0..MAX_DIMS {
            put(8 * d, self.shape[d].to_ne_bytes());
            put(48 + 8 * d, self.stride_a[d].to_ne_bytes());
            put(96 + 8 * d, self.stride_b[d].to_ne_bytes());
        }
        out[144..148].copy_from_slice(&self.ndim.to_ne_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_the_c_struct_size_and_broadcast_offsets_follow_strides() {
        assert_eq!(std::mem::size_of::<Layout>(), 152);
        assert_eq!(std::mem::align_of::<Layout>(), 8);
        // [2, 3] output; a is a transposed [3, 2] (strides 1, 2), b broadcasts a row (strides 0, 1).
        let l = Layout::new(&[2, 3], &[1, 2], &[0, 1]).unwrap();
        let got: Vec<_> = (0..6).map(|i| l.offsets(i)).collect();
        assert_eq!(got, vec![(0, 0), (2, 1), (4, 2), (1, 0), (3, 1), (5, 2)]);
        assert!(Layout::new(&[1; 7], &[0; 7], &[0; 7]).is_none());
        let bytes = l.to_bytes();
        assert_eq!(&bytes[8..16], &3u64.to_ne_bytes());
        assert_eq!(&bytes[56..64], &2i64.to_ne_bytes());
        assert_eq!(&bytes[144..148], &2u32.to_ne_bytes());
    }
}
