//! Typed launchers, one per kernel family: each checks shapes against the buffers (so a kernel never
//! indexes outside them), picks the launch geometry and queues the kernel on the device's stream.
//! Everything is f32 except the tensor-core GEMM operands (bf16/f16 bits in `u16`) and the ids/targets.

use crate::geometry::{grid_stride_blocks, row_block, GemmShape, BLOCK};
use crate::{Arg, Buffer, Device, Element, Error, Result};
use kernels::ops::{Binary, Compare, Reduce, Unary};
use kernels::signatures as sig;
use kernels::Layout;

fn need<T: Element>(op: &'static str, what: &str, buf: &Buffer<T>, len: usize) -> Result<()> {
    if buf.len() < len {
        return Err(Error::invalid(op, format!("{what} has {} elements, needs {len}", buf.len())));
    }
    Ok(())
}

fn u32_of(op: &'static str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::invalid(op, format!("{what} = {v} exceeds u32")))
}

/// Rows of a one-block-per-row kernel: at most 2^31 - 1 blocks.
fn row_grid(op: &'static str, rows: usize) -> Result<[u32; 3]> {
    if rows > i32::MAX as usize {
        return Err(Error::invalid(op, format!("{rows} rows exceed the grid")));
    }
    Ok([rows.max(1) as u32, 1, 1])
}

fn elementwise_grid(n: usize) -> [u32; 3] {
    [grid_stride_blocks(n as u64), 1, 1]
}

fn gemm_args<A: Element>(a: &Buffer<A>, b: &Buffer<A>, c: &Buffer<f32>, g: &GemmShape) -> Vec<Arg> {
    let i = |v: usize| Arg::I64(v as i64);
    vec![
        a.arg(),
        b.arg(),
        c.arg(),
        Arg::U32(g.m as u32),
        Arg::U32(g.n as u32),
        Arg::U32(g.k as u32),
        i(g.a_m),
        i(g.a_k),
        i(g.b_k),
        i(g.b_n),
        i(g.c_m),
        i(g.a_batch),
        i(g.b_batch),
        i(g.c_batch),
        Arg::F32(g.alpha),
        Arg::F32(g.beta),
    ]
}

/// f32 GEMM on the SIMT cores.
pub fn gemm_f32(dev: &Device, a: &Buffer<f32>, b: &Buffer<f32>, c: &mut Buffer<f32>, g: &GemmShape) -> Result<()> {
    match gemm_at_args("gemm_f32", a, 0, b, 0, c, 0, g)? {
        Some((grid, args)) => dev.launch(&sig::GEMM_F32, grid, BLOCK, &args),
        None => Ok(()),
    }
}

/// A GEMM whose operands start at element offsets into their buffers: checks the extents the shape
/// reaches past each offset and returns the grid (`None` for an empty C: nothing to launch) and the
/// arguments with the offset addresses.
#[allow(clippy::too_many_arguments)]
fn gemm_at_args<A: Element>(
    op: &'static str,
    a: &Buffer<A>,
    a_off: usize,
    b: &Buffer<A>,
    b_off: usize,
    c: &Buffer<f32>,
    c_off: usize,
    g: &GemmShape,
) -> Result<Option<([u32; 3], Vec<Arg>)>> {
    let past = |what: &str, off: usize, len: usize| -> Result<usize> {
        len.checked_sub(off)
            .ok_or_else(|| Error::invalid(op, format!("{what} offset {off} is past its buffer of {len} elements")))
    };
    let (a_len, b_len, c_len) = (past("A", a_off, a.len())?, past("B", b_off, b.len())?, past("C", c_off, c.len())?);
    let grid = g.check(op, a_len, b_len, c_len)?;
    if grid.contains(&0) {
        return Ok(None); // an empty C: nothing to write (a zero-sized grid is a launch error)
    }
    let mut args = gemm_args(a, b, c, g);
    args[0] = a.arg_at(a_off);
    args[1] = b.arg_at(b_off);
    args[2] = c.arg_at(c_off);
    Ok(Some((grid, args)))
}

/// Whether the cp.async / ldmatrix tensor-core GEMM (`gemm_bf16_fast` / `gemm_f16_fast` in
/// kernels/cu/gemm_mma.cu) may run on these operands; else the plain one does. `a_addr` / `b_addr` are the
/// device byte addresses where A and B start (offset included). The fast kernel copies 16-byte chunks of
/// 8 elements along each operand's contiguous dim, so: both start 16-byte aligned, batch strides (when
/// there is more than one batch) are multiples of 8 elements, and each operand either has k stride 1 with
/// its other stride and k multiples of 8, or other stride 1 with its k stride and its m (n) multiples of 8
/// (every chunk then lies wholly inside or outside the matrix). The kernel treats an operand as
/// k-contiguous exactly when its k stride is 1, as this does.
pub fn half_gemm_fast_ok(g: &GemmShape, a_addr: u64, b_addr: u64) -> bool {
    let runs = |k_stride: usize, other_stride: usize, other_extent: usize| {
        if k_stride == 1 {
            other_stride.is_multiple_of(8) && g.k.is_multiple_of(8)
        } else {
            other_stride == 1 && k_stride.is_multiple_of(8) && other_extent.is_multiple_of(8)
        }
    };
    a_addr.is_multiple_of(16)
        && b_addr.is_multiple_of(16)
        && (g.batch <= 1 || (g.a_batch.is_multiple_of(8) && g.b_batch.is_multiple_of(8)))
        && runs(g.a_k, g.a_m, g.m)
        && runs(g.b_k, g.b_n, g.n)
}

/// The tensor-core kernel for these launch arguments (A and B pointers first): the fast one when
/// `half_gemm_fast_ok`.
fn half_gemm_kernel(g: &GemmShape, args: &[Arg], bf16: bool) -> &'static kernels::signatures::Kernel {
    let addr = |arg: &Arg| if let Arg::Ptr(p) = arg { Some(*p) } else { None };
    let fast = matches!((addr(&args[0]), addr(&args[1])), (Some(a), Some(b)) if half_gemm_fast_ok(g, a, b));
    match (fast, bf16) {
        (true, true) => &sig::GEMM_BF16_FAST,
        (true, false) => &sig::GEMM_F16_FAST,
        (false, true) => &sig::GEMM_BF16,
        (false, false) => &sig::GEMM_F16,
    }
}

/// Tensor-core GEMM of bf16 (`bf16 == true`) or f16 operands with f32 accumulation and output. Operands
/// that `half_gemm_fast_ok` accepts (aligned, 8-element runs: row-major or transposed contiguous
/// matrices with dims multiple of 8) take the cp.async / ldmatrix kernel, any others the plain one.
pub fn gemm_half(
    dev: &Device,
    a: &Buffer<u16>,
    b: &Buffer<u16>,
    c: &mut Buffer<f32>,
    g: &GemmShape,
    bf16: bool,
) -> Result<()> {
    match gemm_at_args("gemm_half", a, 0, b, 0, c, 0, g)? {
        Some((grid, args)) => dev.launch(half_gemm_kernel(g, &args, bf16), grid, BLOCK, &args),
        None => Ok(()),
    }
}

/// Sets the first `n` elements of `y` to `value`.
pub fn fill(dev: &Device, y: &mut Buffer<f32>, n: usize, value: f32) -> Result<()> {
    need("fill", "y", y, n)?;
    if n == 0 {
        return Ok(());
    }
    dev.launch(&sig::FILL_F32, elementwise_grid(n), BLOCK, &[y.arg(), Arg::U64(n as u64), Arg::F32(value)])
}

/// Max element offset + 1 a strided input reaches over `shape` (strides non-negative).
fn strided_extent(shape: &[usize], strides: &[isize]) -> Option<usize> {
    if shape.contains(&0) {
        return Some(0);
    }
    let mut last = 0usize;
    for (&s, &st) in shape.iter().zip(strides) {
        let st = usize::try_from(st).ok()?;
        last = last.checked_add((s - 1).checked_mul(st)?)?;
    }
    last.checked_add(1)
}

fn layout(op: &'static str, shape: &[usize], sa: &[isize], sb: &[isize]) -> Result<Layout> {
    Layout::new(shape, sa, sb).ok_or_else(|| {
        Error::invalid(op, format!("shape {shape:?} with strides {sa:?} / {sb:?}: at most {} dims", kernels::MAX_DIMS))
    })
}

/// A strided f32 operand: `buf` read from element `offset` with `strides` (0 = broadcast).
#[derive(Clone, Copy, Debug)]
pub struct Strided<'a> {
    pub buf: &'a Buffer<f32>,
    pub offset: usize,
    pub strides: &'a [isize],
}

impl<'a> Strided<'a> {
    /// `buf` from its first element.
    pub fn new(buf: &'a Buffer<f32>, strides: &'a [isize]) -> Self {
        Strided { buf, offset: 0, strides }
    }

    /// Checks the elements `shape` reaches fit in the buffer; the kernel argument (address of `offset`).
    fn checked_arg(&self, op: &'static str, what: &str, shape: &[usize]) -> Result<Arg> {
        let ext = strided_extent(shape, self.strides)
            .and_then(|e| e.checked_add(self.offset))
            .ok_or_else(|| Error::invalid(op, format!("{what}: negative or huge strides {:?}", self.strides)))?;
        need(op, what, self.buf, ext)?;
        Ok(self.buf.arg_at(self.offset))
    }
}

/// y (contiguous, `shape`) = op(x, scalar) with x strided.
pub fn unary(dev: &Device, x: Strided, y: &mut Buffer<f32>, shape: &[usize], op: Unary, scalar: f32) -> Result<()> {
    let l = layout("unary", shape, x.strides, x.strides)?;
    let n: usize = shape.iter().product();
    let xa = x.checked_arg("unary", "x", shape)?;
    need("unary", "y", y, n)?;
    if n == 0 {
        return Ok(());
    }
    let args =
        [xa, y.arg(), Arg::Bytes(l.to_bytes().to_vec()), Arg::U64(n as u64), Arg::U32(op as u32), Arg::F32(scalar)];
    dev.launch(&sig::UNARY_F32, elementwise_grid(n), BLOCK, &args)
}

/// out (contiguous, `shape`) = op(a, b) with a and b strided (stride 0 = broadcast).
pub fn binary(dev: &Device, a: Strided, b: Strided, out: &mut Buffer<f32>, shape: &[usize], op: Binary) -> Result<()> {
    let l = layout("binary", shape, a.strides, b.strides)?;
    let n: usize = shape.iter().product();
    let (aa, ba) = (a.checked_arg("binary", "a", shape)?, b.checked_arg("binary", "b", shape)?);
    need("binary", "out", out, n)?;
    if n == 0 {
        return Ok(());
    }
    let args = [aa, ba, out.arg(), Arg::Bytes(l.to_bytes().to_vec()), Arg::U64(n as u64), Arg::U32(op as u32)];
    dev.launch(&sig::BINARY_F32, elementwise_grid(n), BLOCK, &args)
}

/// Reduces contiguous x viewed as [outer, len, inner] over the middle dim into y [outer, inner].
pub fn reduce(
    dev: &Device,
    x: &Buffer<f32>,
    y: &mut Buffer<f32>,
    outer: usize,
    len: usize,
    inner: usize,
    op: Reduce,
) -> Result<()> {
    const OP: &str = "reduce";
    if len == 0 {
        return Err(Error::invalid(OP, "cannot reduce an empty dim"));
    }
    need(OP, "x", x, outer * len * inner)?;
    need(OP, "y", y, outer * inner)?;
    let (o, l, i) = (u32_of(OP, "outer", outer)?, u32_of(OP, "len", len)?, u32_of(OP, "inner", inner)?);
    if inner == 1 {
        let args = [x.arg(), y.arg(), Arg::U32(o), Arg::U32(l), Arg::U32(op as u32)];
        dev.launch(&sig::REDUCE_LAST_F32, row_grid(OP, outer)?, row_block(l), &args)
    } else {
        let args = [x.arg(), y.arg(), Arg::U32(o), Arg::U32(l), Arg::U32(i), Arg::U32(op as u32)];
        dev.launch(&sig::REDUCE_MID_F32, elementwise_grid(outer * inner), BLOCK, &args)
    }
}

fn rows_cols(op: &'static str, rows: usize, cols: usize) -> Result<(u32, u32)> {
    if cols == 0 {
        return Err(Error::invalid(op, "rows of length 0"));
    }
    Ok((u32_of(op, "rows", rows)?, u32_of(op, "cols", cols)?))
}

/// Row softmax (or log-softmax) of contiguous [rows, cols].
pub fn softmax(dev: &Device, x: &Buffer<f32>, y: &mut Buffer<f32>, rows: usize, cols: usize, log: bool) -> Result<()> {
    let (r, c) = rows_cols("softmax", rows, cols)?;
    need("softmax", "x", x, rows * cols)?;
    need("softmax", "y", y, rows * cols)?;
    let args = [x.arg(), y.arg(), Arg::U32(r), Arg::U32(c), Arg::U32(log as u32)];
    dev.launch(&sig::SOFTMAX_F32, row_grid("softmax", rows)?, row_block(c), &args)
}

/// Softmax (or log-softmax) backward from the forward output `y` and its gradient `dy`.
pub fn softmax_bwd(
    dev: &Device,
    y: &Buffer<f32>,
    dy: &Buffer<f32>,
    dx: &mut Buffer<f32>,
    rows: usize,
    cols: usize,
    log: bool,
) -> Result<()> {
    let (r, c) = rows_cols("softmax_bwd", rows, cols)?;
    for (name, b) in [("y", y), ("dy", dy), ("dx", &*dx)] {
        need("softmax_bwd", name, b, rows * cols)?;
    }
    let args = [y.arg(), dy.arg(), dx.arg(), Arg::U32(r), Arg::U32(c), Arg::U32(log as u32)];
    dev.launch(&sig::SOFTMAX_BWD_F32, row_grid("softmax_bwd", rows)?, row_block(c), &args)
}

/// Per-row cross-entropy of logits [rows, cols] against `targets` (ignore_index rows give 0), plus each
/// row's logsumexp for the backward. Targets are checked on the host first.
pub struct CrossEntropy<'a> {
    pub logits: &'a Buffer<f32>,
    pub targets: &'a Buffer<i32>,
    /// The same targets on the host (for the range check).
    pub host_targets: &'a [i32],
    pub rows: usize,
    pub cols: usize,
    pub ignore_index: i32,
}

impl CrossEntropy<'_> {
    fn check(&self) -> Result<(u32, u32)> {
        const OP: &str = "cross_entropy";
        let rc = rows_cols(OP, self.rows, self.cols)?;
        need(OP, "logits", self.logits, self.rows * self.cols)?;
        need(OP, "targets", self.targets, self.rows)?;
        if self.host_targets.len() != self.rows {
            return Err(Error::invalid(OP, format!("{} host targets for {} rows", self.host_targets.len(), self.rows)));
        }
        if let Some(t) =
            self.host_targets.iter().find(|&&t| t != self.ignore_index && (t < 0 || t as usize >= self.cols))
        {
            return Err(Error::invalid(OP, format!("target {t} out of range for {} classes", self.cols)));
        }
        Ok(rc)
    }

    pub fn forward(&self, dev: &Device, loss: &mut Buffer<f32>, lse: &mut Buffer<f32>) -> Result<()> {
        let (r, c) = self.check()?;
        need("cross_entropy", "loss", loss, self.rows)?;
        need("cross_entropy", "lse", lse, self.rows)?;
        let args = [
            self.logits.arg(),
            self.targets.arg(),
            loss.arg(),
            lse.arg(),
            Arg::U32(r),
            Arg::U32(c),
            Arg::I32(self.ignore_index),
        ];
        dev.launch(&sig::CROSS_ENTROPY_F32, row_grid("cross_entropy", self.rows)?, row_block(c), &args)
    }

    /// dlogits = scale * (softmax - onehot), 0 on ignored rows; scale = dloss / (rows not ignored).
    pub fn backward(&self, dev: &Device, lse: &Buffer<f32>, dx: &mut Buffer<f32>, scale: f32) -> Result<()> {
        let (r, c) = self.check()?;
        need("cross_entropy_bwd", "lse", lse, self.rows)?;
        need("cross_entropy_bwd", "dx", dx, self.rows * self.cols)?;
        let args = [
            self.logits.arg(),
            self.targets.arg(),
            lse.arg(),
            dx.arg(),
            Arg::U32(r),
            Arg::U32(c),
            Arg::I32(self.ignore_index),
            Arg::F32(scale),
        ];
        dev.launch(&sig::CROSS_ENTROPY_BWD_F32, row_grid("cross_entropy_bwd", self.rows)?, row_block(c), &args)
    }
}

fn opt_arg<T: Element>(op: &'static str, what: &str, b: Option<&Buffer<T>>, len: usize) -> Result<Arg> {
    match b {
        Some(b) => {
            need(op, what, b, len)?;
            Ok(b.arg())
        }
        None => Ok(Arg::Ptr(0)),
    }
}

/// Layer norm (`rms == false`) or RMS norm over the last dim of contiguous [rows, cols].
pub struct Norm<'a> {
    pub rows: usize,
    pub cols: usize,
    pub eps: f32,
    pub rms: bool,
    pub weight: Option<&'a Buffer<f32>>,
    pub bias: Option<&'a Buffer<f32>>,
}

impl Norm<'_> {
    /// y and the saved statistics: mean (layer norm only, `rows`) and rstd (`rows`).
    pub fn forward(
        &self,
        dev: &Device,
        x: &Buffer<f32>,
        y: &mut Buffer<f32>,
        mean: Option<&mut Buffer<f32>>,
        rstd: &mut Buffer<f32>,
    ) -> Result<()> {
        const OP: &str = "norm";
        let (r, c) = rows_cols(OP, self.rows, self.cols)?;
        if !self.rms && mean.is_none() {
            return Err(Error::invalid(OP, "layer norm needs a mean buffer"));
        }
        need(OP, "x", x, self.rows * self.cols)?;
        need(OP, "y", y, self.rows * self.cols)?;
        need(OP, "rstd", rstd, self.rows)?;
        let args = [
            x.arg(),
            opt_arg(OP, "weight", self.weight, self.cols)?,
            opt_arg(OP, "bias", self.bias, self.cols)?,
            y.arg(),
            opt_arg(OP, "mean", mean.as_deref(), self.rows)?,
            rstd.arg(),
            Arg::U32(r),
            Arg::U32(c),
            Arg::F32(self.eps),
            Arg::U32(self.rms as u32),
        ];
        dev.launch(&sig::NORM_F32, row_grid(OP, self.rows)?, row_block(c), &args)
    }

    /// dx, and dw / db accumulated into (zeroed) buffers when given.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        dev: &Device,
        x: &Buffer<f32>,
        mean: Option<&Buffer<f32>>,
        rstd: &Buffer<f32>,
        dy: &Buffer<f32>,
        dx: &mut Buffer<f32>,
        dw: Option<&mut Buffer<f32>>,
        db: Option<&mut Buffer<f32>>,
    ) -> Result<()> {
        const OP: &str = "norm_bwd";
        let (r, c) = rows_cols(OP, self.rows, self.cols)?;
        if !self.rms && mean.is_none() {
            return Err(Error::invalid(OP, "layer norm needs the saved mean"));
        }
        for (name, b) in [("x", x), ("dy", dy), ("dx", &*dx)] {
            need(OP, name, b, self.rows * self.cols)?;
        }
        need(OP, "rstd", rstd, self.rows)?;
        let args = [
            x.arg(),
            opt_arg(OP, "weight", self.weight, self.cols)?,
            opt_arg(OP, "mean", mean, self.rows)?,
            rstd.arg(),
            dy.arg(),
            dx.arg(),
            opt_arg(OP, "dw", dw.as_deref(), self.cols)?,
            opt_arg(OP, "db", db.as_deref(), self.cols)?,
            Arg::U32(r),
            Arg::U32(c),
            Arg::U32(self.rms as u32),
        ];
        dev.launch(&sig::NORM_BWD_F32, row_grid(OP, self.rows)?, row_block(c), &args)
    }
}

fn check_ids(op: &'static str, host_ids: &[u32], vocab: usize) -> Result<()> {
    match host_ids.iter().find(|&&i| i as usize >= vocab) {
        Some(i) => Err(Error::invalid(op, format!("id {i} out of range for a table of {vocab} rows"))),
        None => Ok(()),
    }
}

/// out[i] = table[ids[i]] for a [vocab, dim] table; `host_ids` are the ids on the host, range-checked.
pub fn embedding(
    dev: &Device,
    ids: &Buffer<u32>,
    host_ids: &[u32],
    table: &Buffer<f32>,
    out: &mut Buffer<f32>,
    vocab: usize,
    dim: usize,
) -> Result<()> {
    const OP: &str = "embedding";
    check_ids(OP, host_ids, vocab)?;
    let n = host_ids.len();
    need(OP, "ids", ids, n)?;
    need(OP, "table", table, vocab * dim)?;
    need(OP, "out", out, n * dim)?;
    let (nn, d, v) = (u32_of(OP, "ids", n)?, u32_of(OP, "dim", dim)?, u32_of(OP, "vocab", vocab)?);
    let args = [ids.arg(), table.arg(), out.arg(), Arg::U32(nn), Arg::U32(d), Arg::U32(v)];
    dev.launch(&sig::EMBEDDING_F32, elementwise_grid(n * dim), BLOCK, &args)
}

/// dtable[ids[i]] += dout[i] (scatter-add into a zeroed or accumulating [vocab, dim] buffer).
pub fn embedding_bwd(
    dev: &Device,
    ids: &Buffer<u32>,
    host_ids: &[u32],
    dout: &Buffer<f32>,
    dtable: &mut Buffer<f32>,
    vocab: usize,
    dim: usize,
) -> Result<()> {
    const OP: &str = "embedding_bwd";
    check_ids(OP, host_ids, vocab)?;
    let n = host_ids.len();
    need(OP, "ids", ids, n)?;
    need(OP, "dout", dout, n * dim)?;
    need(OP, "dtable", dtable, vocab * dim)?;
    let (nn, d, v) = (u32_of(OP, "ids", n)?, u32_of(OP, "dim", dim)?, u32_of(OP, "vocab", vocab)?);
    let args = [ids.arg(), dout.arg(), dtable.arg(), Arg::U32(nn), Arg::U32(d), Arg::U32(v)];
    dev.launch(&sig::EMBEDDING_BWD_F32, elementwise_grid(n * dim), BLOCK, &args)
}

/// RoPE on contiguous [batch, heads, seq, head_dim] with cos/sin tables [seq, head_dim] (or
/// [batch, seq, head_dim] when `per_batch`); `transpose` applies the adjoint (the backward).
pub struct Rope {
    pub batch: usize,
    pub heads: usize,
    pub seq: usize,
    pub head_dim: usize,
    pub per_batch: bool,
}

impl Rope {
    pub fn apply(
        &self,
        dev: &Device,
        x: &Buffer<f32>,
        cos: &Buffer<f32>,
        sin: &Buffer<f32>,
        y: &mut Buffer<f32>,
        transpose: bool,
    ) -> Result<()> {
        const OP: &str = "rope";
        if !self.head_dim.is_multiple_of(2) {
            return Err(Error::invalid(OP, format!("head_dim {} is odd", self.head_dim)));
        }
        let n = self.batch * self.heads * self.seq * self.head_dim;
        let table = if self.per_batch { self.batch } else { 1 } * self.seq * self.head_dim;
        need(OP, "x", x, n)?;
        need(OP, "y", y, n)?;
        need(OP, "cos", cos, table)?;
        need(OP, "sin", sin, table)?;
        let args = [
            x.arg(),
            cos.arg(),
            sin.arg(),
            y.arg(),
            Arg::U32(u32_of(OP, "batch", self.batch)?),
            Arg::U32(u32_of(OP, "heads", self.heads)?),
            Arg::U32(u32_of(OP, "seq", self.seq)?),
            Arg::U32(u32_of(OP, "head_dim", self.head_dim)?),
            Arg::U32(self.per_batch as u32),
            Arg::U32(transpose as u32),
        ];
        dev.launch(&sig::ROPE_F32, elementwise_grid(n / 2), BLOCK, &args)
    }
}

/// In-place masked softmax of attention scores [batch, heads, q_len, k_len] (k_len >= q_len; the extra
/// keys are a prefix every query sees). `key_valid` is [batch, k_len] of 0/1 (None: all valid).
#[allow(clippy::too_many_arguments)]
pub fn attention_softmax(
    dev: &Device,
    scores: &mut Buffer<f32>,
    key_valid: Option<&Buffer<u8>>,
    batch: usize,
    heads: usize,
    q_len: usize,
    k_len: usize,
    causal: bool,
) -> Result<()> {
    const OP: &str = "attention_softmax";
    if k_len < q_len || k_len == 0 {
        return Err(Error::invalid(OP, format!("k_len {k_len} must be >= q_len {q_len} and > 0")));
    }
    let rows = batch * heads * q_len;
    need(OP, "scores", scores, rows * k_len)?;
    let args = [
        scores.arg(),
        opt_arg(OP, "key_valid", key_valid, batch * k_len)?,
        Arg::U32(u32_of(OP, "batch", batch)?),
        Arg::U32(u32_of(OP, "heads", heads)?),
        Arg::U32(u32_of(OP, "q_len", q_len)?),
        Arg::U32(u32_of(OP, "k_len", k_len)?),
        Arg::U32(causal as u32),
    ];
    dev.launch(&sig::ATTENTION_SOFTMAX_F32, row_grid(OP, rows)?, row_block(k_len as u32), &args)
}

/// Philox dropout (see kernels/cu/dropout.cu); the backward is the same call on dy.
pub fn dropout(
    dev: &Device,
    x: &Buffer<f32>,
    y: &mut Buffer<f32>,
    n: usize,
    p: f32,
    seed: u64,
    offset: u64,
) -> Result<()> {
    if !(0.0..=1.0).contains(&p) {
        return Err(Error::invalid("dropout", format!("p = {p} not in [0, 1]")));
    }
    need("dropout", "x", x, n)?;
    need("dropout", "y", y, n)?;
    let args = [x.arg(), y.arg(), Arg::U64(n as u64), Arg::F32(p), Arg::U64(seed), Arg::U64(offset)];
    dev.launch(&sig::DROPOUT_F32, elementwise_grid(n.div_ceil(4)), BLOCK, &args)
}

/// AdamW hyper-parameters and the step number (1-based) for the bias corrections.
#[derive(Clone, Copy, Debug)]
pub struct AdamW {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub step: u32,
}

pub fn adamw(
    dev: &Device,
    p: &mut Buffer<f32>,
    g: &Buffer<f32>,
    m: &mut Buffer<f32>,
    v: &mut Buffer<f32>,
    h: &AdamW,
) -> Result<()> {
    if h.step == 0 {
        return Err(Error::invalid("adamw", "step is 1-based"));
    }
    let n = p.len();
    for (name, b) in [("g", g), ("m", &*m), ("v", &*v)] {
        need("adamw", name, b, n)?;
    }
    let bc1 = 1.0 - f64::from(h.beta1).powi(h.step as i32);
    let bc2 = 1.0 - f64::from(h.beta2).powi(h.step as i32);
    let args = [
        p.arg(),
        g.arg(),
        m.arg(),
        v.arg(),
        Arg::U64(n as u64),
        Arg::F32(h.lr),
        Arg::F32(h.beta1),
        Arg::F32(h.beta2),
        Arg::F32(h.eps),
        Arg::F32(h.weight_decay),
        Arg::F32(bc1 as f32),
        Arg::F32(bc2 as f32),
    ];
    dev.launch(&sig::ADAMW_F32, elementwise_grid(n), BLOCK, &args)
}

/// SGD step; `momentum_buf` is required when momentum != 0; `first` marks the first step.
#[allow(clippy::too_many_arguments)]
pub fn sgd(
    dev: &Device,
    p: &mut Buffer<f32>,
    g: &Buffer<f32>,
    momentum_buf: Option<&mut Buffer<f32>>,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    first: bool,
) -> Result<()> {
    let n = p.len();
    need("sgd", "g", g, n)?;
    if momentum != 0.0 && momentum_buf.is_none() {
        return Err(Error::invalid("sgd", "momentum needs a buffer"));
    }
    let args = [
        p.arg(),
        g.arg(),
        opt_arg("sgd", "momentum buffer", momentum_buf.as_deref(), n)?,
        Arg::U64(n as u64),
        Arg::F32(lr),
        Arg::F32(momentum),
        Arg::F32(weight_decay),
        Arg::U32(first as u32),
    ];
    dev.launch(&sig::SGD_F32, elementwise_grid(n), BLOCK, &args)
}

/// f32 -> bf16 (`bf16`) or f16 bits, round to nearest even.
pub fn cast_to_half(dev: &Device, x: &Buffer<f32>, y: &mut Buffer<u16>, bf16: bool) -> Result<()> {
    need("cast", "y", y, x.len())?;
    let k = if bf16 { &sig::CAST_F32_BF16 } else { &sig::CAST_F32_F16 };
    dev.launch(k, elementwise_grid(x.len()), BLOCK, &[x.arg(), y.arg(), Arg::U64(x.len() as u64)])
}

/// bf16 (`bf16`) or f16 bits -> f32.
pub fn cast_from_half(dev: &Device, x: &Buffer<u16>, y: &mut Buffer<f32>, bf16: bool) -> Result<()> {
    need("cast", "y", y, x.len())?;
    let k = if bf16 { &sig::CAST_BF16_F32 } else { &sig::CAST_F16_F32 };
    dev.launch(k, elementwise_grid(x.len()), BLOCK, &[x.arg(), y.arg(), Arg::U64(x.len() as u64)])
}

// --- GEMM on operands at element offsets (engine matmul, LoRA and attention read views in place) ---

/// f32 GEMM with each operand starting at an element offset into its buffer (a view's storage offset,
/// or a sub-block such as columns `off..` of a wider C): `a_off`, `b_off`, `c_off`. `gemm_f32` is the
/// same with all three 0.
#[allow(clippy::too_many_arguments)]
pub fn gemm_f32_at(
    dev: &Device,
    a: &Buffer<f32>,
    a_off: usize,
    b: &Buffer<f32>,
    b_off: usize,
    c: &mut Buffer<f32>,
    c_off: usize,
    g: &GemmShape,
) -> Result<()> {
    match gemm_at_args("gemm_f32_at", a, a_off, b, b_off, c, c_off, g)? {
        Some((grid, args)) => dev.launch(&sig::GEMM_F32, grid, BLOCK, &args),
        None => Ok(()),
    }
}

/// `gemm_half` (bf16 when `bf16`, else f16 operands; f32 C) with each operand at an element offset,
/// as `gemm_f32_at`; the fast kernel runs when the offset operands pass `half_gemm_fast_ok`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_half_at(
    dev: &Device,
    a: &Buffer<u16>,
    a_off: usize,
    b: &Buffer<u16>,
    b_off: usize,
    c: &mut Buffer<f32>,
    c_off: usize,
    g: &GemmShape,
    bf16: bool,
) -> Result<()> {
    match gemm_at_args("gemm_half_at", a, a_off, b, b_off, c, c_off, g)? {
        Some((grid, args)) => dev.launch(half_gemm_kernel(g, &args, bf16), grid, BLOCK, &args),
        None => Ok(()),
    }
}

// --- selection and data movement (kernels/cu/select.cu): cat / stack / narrow backward, where, compare ---

/// A strided operand of any element type: `buf` from element `offset` with `strides` (0 = broadcast).
/// For a destination, the strides say where each element of the shape goes.
fn strided_arg<T: Element>(
    op: &'static str,
    what: &str,
    buf: &Buffer<T>,
    offset: usize,
    strides: &[isize],
    shape: &[usize],
) -> Result<Arg> {
    let ext = strided_extent(shape, strides)
        .and_then(|e| if e == 0 { Some(0) } else { e.checked_add(offset) })
        .ok_or_else(|| Error::invalid(op, format!("{what}: negative or huge strides {strides:?}")))?;
    need(op, what, buf, ext)?;
    Ok(buf.arg_at(offset))
}

/// A u8 mask read from element `offset` with `strides` (0 = broadcast); nonzero selects.
#[derive(Clone, Copy, Debug)]
pub struct Mask<'a> {
    pub buf: &'a Buffer<u8>,
    pub offset: usize,
    pub strides: &'a [isize],
}

/// Copies `x` (strided, `shape`) to `y` from element `y_offset` through `y_strides`: with the strides
/// of a larger output and the offset of a slice of it, a view lands in that slice (cat, stack, the
/// zero-padded backward of narrow). Elements of `y` outside the slice are left as they are.
pub fn copy_strided(
    dev: &Device,
    x: Strided,
    y: &mut Buffer<f32>,
    y_offset: usize,
    y_strides: &[isize],
    shape: &[usize],
) -> Result<()> {
    const OP: &str = "copy_strided";
    let l = layout(OP, shape, x.strides, y_strides)?;
    let n: usize = shape.iter().product();
    let xa = strided_arg(OP, "x", x.buf, x.offset, x.strides, shape)?;
    let ya = strided_arg(OP, "y", y, y_offset, y_strides, shape)?;
    if n == 0 {
        return Ok(());
    }
    dev.launch(
        &sig::COPY_STRIDED_F32,
        elementwise_grid(n),
        BLOCK,
        &[xa, ya, Arg::Bytes(l.to_bytes().to_vec()), Arg::U64(n as u64)],
    )
}

/// out (contiguous, `shape`) = mask != 0 ? a : b, all three strided (stride 0 = broadcast). A select,
/// not a blend: a -inf operand never makes NaN.
pub fn where_select(
    dev: &Device,
    mask: Mask,
    a: Strided,
    b: Strided,
    out: &mut Buffer<f32>,
    shape: &[usize],
) -> Result<()> {
    const OP: &str = "where";
    let ma = layout(OP, shape, mask.strides, a.strides)?;
    let lb = layout(OP, shape, b.strides, b.strides)?;
    let n: usize = shape.iter().product();
    need(OP, "out", out, n)?;
    let args = [
        strided_arg(OP, "mask", mask.buf, mask.offset, mask.strides, shape)?,
        a.checked_arg(OP, "a", shape)?,
        b.checked_arg(OP, "b", shape)?,
        out.arg(),
        Arg::Bytes(ma.to_bytes().to_vec()),
        Arg::Bytes(lb.to_bytes().to_vec()),
        Arg::U64(n as u64),
    ];
    if n == 0 {
        return Ok(());
    }
    dev.launch(&sig::WHERE_F32, elementwise_grid(n), BLOCK, &args)
}

/// out (contiguous u8, `shape`) = op(a, b) as 0 / 1, a and b strided (stride 0 = broadcast).
pub fn compare(dev: &Device, a: Strided, b: Strided, out: &mut Buffer<u8>, shape: &[usize], op: Compare) -> Result<()> {
    const OP: &str = "compare";
    let l = layout(OP, shape, a.strides, b.strides)?;
    let n: usize = shape.iter().product();
    let (aa, ba) = (a.checked_arg(OP, "a", shape)?, b.checked_arg(OP, "b", shape)?);
    need(OP, "out", out, n)?;
    if n == 0 {
        return Ok(());
    }
    let args = [aa, ba, out.arg(), Arg::Bytes(l.to_bytes().to_vec()), Arg::U64(n as u64), Arg::U32(op as u32)];
    dev.launch(&sig::COMPARE_F32, elementwise_grid(n), BLOCK, &args)
}

/// y[..n] = x[offset..offset + n] as f32.
pub fn cast_u8_to_f32(dev: &Device, x: &Buffer<u8>, offset: usize, y: &mut Buffer<f32>, n: usize) -> Result<()> {
    need("cast_u8_f32", "x", x, offset.saturating_add(n))?;
    need("cast_u8_f32", "y", y, n)?;
    if n == 0 {
        return Ok(());
    }
    dev.launch(&sig::CAST_U8_F32, elementwise_grid(n), BLOCK, &[x.arg_at(offset), y.arg(), Arg::U64(n as u64)])
}

/// y[..n] = x[offset..offset + n] as u8, saturating like Rust's `as u8` (NaN and negatives give 0).
pub fn cast_f32_to_u8(dev: &Device, x: &Buffer<f32>, offset: usize, y: &mut Buffer<u8>, n: usize) -> Result<()> {
    need("cast_f32_u8", "x", x, offset.saturating_add(n))?;
    need("cast_f32_u8", "y", y, n)?;
    if n == 0 {
        return Ok(());
    }
    dev.launch(&sig::CAST_F32_U8, elementwise_grid(n), BLOCK, &[x.arg_at(offset), y.arg(), Arg::U64(n as u64)])
}

/// The per-block scales of a bitsandbytes 4-bit matrix on the device (see [`Bnb4`]).
#[derive(Clone, Copy, Debug)]
pub enum Bnb4Absmax<'a> {
    /// One f32 per block.
    Plain(&'a Buffer<f32>),
    /// Double quantization: block b's absmax is `nested_code[codes[b]] · nested_absmax[b / nested_blocksize] + offset`.
    Double {
        codes: &'a Buffer<u8>,
        nested_code: &'a Buffer<f32>,
        nested_absmax: &'a Buffer<f32>,
        nested_blocksize: usize,
        offset: f32,
    },
}

/// A row-major matrix of `numel` elements in bitsandbytes' 4-bit layout: `packed` holds two codes per
/// byte (element 2i in the high nibble of byte i), `levels` the 16 values the codes stand for, one
/// absmax per `blocksize` elements.
#[derive(Clone, Copy, Debug)]
pub struct Bnb4<'a> {
    pub packed: &'a Buffer<u8>,
    pub levels: &'a Buffer<f32>,
    pub absmax: Bnb4Absmax<'a>,
    pub numel: usize,
    pub blocksize: usize,
}

/// out[..n] = the flat elements `start..start + n` of `m` in f32 (kernels/cu/dequant.cu).
pub fn dequant_bnb4(dev: &Device, m: &Bnb4, start: usize, n: usize, out: &mut Buffer<f32>) -> Result<()> {
    const OP: &str = "dequant_bnb4";
    if start.checked_add(n).is_none_or(|end| end > m.numel) {
        return Err(Error::invalid(OP, format!("elements {start}..+{n} outside a matrix of {}", m.numel)));
    }
    if m.blocksize == 0 {
        return Err(Error::invalid(OP, "blocksize must be positive"));
    }
    let blocksize = u32_of(OP, "blocksize", m.blocksize)?;
    let blocks = m.numel.div_ceil(m.blocksize);
    need(OP, "packed", m.packed, m.numel.div_ceil(2))?;
    need(OP, "levels", m.levels, 16)?;
    need(OP, "out", out, n)?;
    let range = [Arg::U64(start as u64), Arg::U64(n as u64), Arg::U32(blocksize)];
    match m.absmax {
        Bnb4Absmax::Plain(absmax) => {
            need(OP, "absmax", absmax, blocks)?;
            if n == 0 {
                return Ok(());
            }
            let mut args = vec![m.packed.arg(), m.levels.arg(), absmax.arg(), out.arg()];
            args.extend(range);
            dev.launch(&sig::DEQUANT_BNB4_F32, elementwise_grid(n), BLOCK, &args)
        }
        Bnb4Absmax::Double { codes, nested_code, nested_absmax, nested_blocksize, offset } => {
            if nested_blocksize == 0 {
                return Err(Error::invalid(OP, "nested blocksize must be positive"));
            }
            let nested = u32_of(OP, "nested blocksize", nested_blocksize)?;
            need(OP, "codes", codes, blocks)?;
            // Any u8 code may index it.
            need(OP, "nested_code", nested_code, 256)?;
            need(OP, "nested_absmax", nested_absmax, blocks.div_ceil(nested_blocksize))?;
            if n == 0 {
                return Ok(());
            }
            let mut args = vec![
                m.packed.arg(),
                m.levels.arg(),
                codes.arg(),
                nested_code.arg(),
                nested_absmax.arg(),
                Arg::F32(offset),
                out.arg(),
            ];
            args.extend(range);
            args.push(Arg::U32(nested));
            dev.launch(&sig::DEQUANT_BNB4_DQ_F32, elementwise_grid(n), BLOCK, &args)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::half_gemm_fast_ok;
    use crate::GemmShape;

    #[test]
    fn the_fast_half_gemm_needs_aligned_operands_with_8_element_runs() {
        // Every layout of A and B, dims multiples of 8: fast.
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            assert!(half_gemm_fast_ok(&GemmShape::row_major(64, 24, 40, 3, ta, tb), 256, 512), "{ta} {tb}");
        }
        let g = GemmShape::row_major(64, 24, 40, 3, false, false);
        // Misaligned start (an element offset of 4 halves = 8 bytes), on either operand.
        assert!(!half_gemm_fast_ok(&g, 256 + 8, 512));
        assert!(!half_gemm_fast_ok(&g, 256, 512 + 2));
        // k not a multiple of 8 breaks the k-contiguous A (its row stride too); row-major B is n-contiguous
        // and needs n % 8 == 0, not k.
        assert!(!half_gemm_fast_ok(&GemmShape::row_major(64, 24, 36, 1, false, true), 0, 0));
        assert!(!half_gemm_fast_ok(&GemmShape::row_major(64, 24, 36, 1, true, true), 0, 0));
        assert!(half_gemm_fast_ok(&GemmShape::row_major(64, 24, 36, 1, true, false), 0, 0));
        // m (n) not a multiple of 8 breaks a transposed A (a row-major B).
        assert!(!half_gemm_fast_ok(&GemmShape::row_major(60, 24, 40, 1, true, true), 0, 0));
        assert!(half_gemm_fast_ok(&GemmShape::row_major(60, 24, 40, 1, false, true), 0, 0));
        assert!(!half_gemm_fast_ok(&GemmShape::row_major(64, 20, 40, 1, false, false), 0, 0));
        assert!(half_gemm_fast_ok(&GemmShape::row_major(64, 20, 40, 1, false, true), 0, 0));
        // A padded leading dim that is a multiple of 8 is fine; one that is not, or a stride of 1 on
        // neither dim (a strided view), is not.
        let mut p = g;
        p.a_m = 48;
        p.a_batch = 48 * 64;
        assert!(half_gemm_fast_ok(&p, 0, 0));
        p.a_m = 44;
        p.a_batch = 44 * 64;
        assert!(!half_gemm_fast_ok(&p, 0, 0));
        let mut v = g;
        v.b_n = 2;
        assert!(!half_gemm_fast_ok(&v, 0, 0));
        // A batch stride off the 8-element grid matters only with more than one batch.
        let mut z = g;
        z.b_batch += 4;
        assert!(!half_gemm_fast_ok(&z, 0, 0));
        z.batch = 1;
        assert!(half_gemm_fast_ok(&z, 0, 0));
    }
}
