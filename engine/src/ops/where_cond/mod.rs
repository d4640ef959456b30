//! Selection by a mask: `where_cond` and `masked_fill`. A real select, not `a·m + b·(1−m)`, so that
//! filling with −∞ (attention masks) never makes NaN.
#[cfg(feature = "cuda")]
mod cuda;

use crate::autograd::record;
use crate::cpu::strided::map_rows;
use crate::dtype::DType;
use crate::error::Result;
use crate::layout::broadcast_shapes;
use crate::storage::{common_device, CpuStorage, Device};
use crate::tensor::Tensor;

impl Tensor {
    /// `mask ? on_true : on_false` elementwise, all three broadcast together. The mask is nonzero for
    /// true (any dtype).
    pub fn where_cond(mask: &Tensor, on_true: &Tensor, on_false: &Tensor) -> Result<Tensor> {
        let (a, b) = (on_true.float_input("where_cond")?, on_false.float_input("where_cond")?);
        let device = common_device("where_cond", &[mask, &a, &b])?;
        // The mask as each device's kernel reads it: f32 on the host, u8 on the GPU.
        let m = match device {
            Device::Cpu => mask.detach().to_dtype(DType::F32)?,
            #[cfg(feature = "cuda")]
            Device::Cuda(o) => cuda::u8_mask(o, &mask.detach())?,
        };
        let shape = broadcast_shapes("where_cond", &broadcast_shapes("where_cond", m.shape(), a.shape())?, b.shape())?;
        let (lm, la, lb) =
            (m.layout().broadcast_as(&shape)?, a.layout().broadcast_as(&shape)?, b.layout().broadcast_as(&shape)?);
        let out = match device {
            Device::Cpu => {
                let (md, ad, bd) = (
                    m.read_all::<f32>("where_cond")?,
                    a.read_all::<f32>("where_cond")?,
                    b.read_all::<f32>("where_cond")?,
                );
                let out = map_rows(&shape, [&lm, &la, &lb], |row, [om, oa, ob], [sm, sa, sb]| {
                    for (j, o) in row.iter_mut().enumerate() {
                        *o = if md[om + j * sm] != 0.0 { ad[oa + j * sa] } else { bd[ob + j * sb] };
                    }
                });
                Tensor::from_op(CpuStorage::F32(out), &shape, None)
            }
            #[cfg(feature = "cuda")]
            Device::Cuda(o) => cuda::select(o, (&m, &lm), (&a, &la), (&b, &lb), &shape)?,
        };
        let (ia, ib) = (a.clone(), b.clone());
        let node = record("where_cond", &[&a, &b], move |_, g| {
            let zero = Tensor::zeros_on(&[], DType::F32, g.device())?;
            let ga = if ia.tracks_grad() { Some(Tensor::where_cond(&m, g, &zero)?.sum_to(ia.shape())?) } else { None };
            let gb = if ib.tracks_grad() { Some(Tensor::where_cond(&m, &zero, g)?.sum_to(ib.shape())?) } else { None };
            Ok(vec![ga, gb])
        });
        Ok(out.with_node_opt(node))
    }

    /// `value` where `mask` is nonzero, `self` elsewhere (mask broadcast to `self`).
    pub fn masked_fill(&self, mask: &Tensor, value: f32) -> Result<Tensor> {
        Tensor::where_cond(mask, &Tensor::full_on(value.into(), &[], DType::F32, self.device())?, self)
    }
}
