//! Burn's CPU tensors as slices: which tensors the kernels can read in place (plain, not
//! autodiff, on the `flex` backend), their storage and layout, and results back as tensors.

use burn::backend::flex::{Flex, FlexTensor};
use burn::tensor::{DType, Device, Tensor, TensorData, bf16, f16};

use crate::element::{WeightLayout, narrow, widened};

/// `Some(None)` without a bias, `Some(Some(values))` for a plain `[out]` bias of `dtype` on
/// Burn's CPU backend, `None` for any other bias (the caller falls back to Burn's ops).
pub(crate) fn bias_f32(bias: Option<&Tensor<1>>, d_out: usize, dtype: DType) -> Option<Option<Vec<f32>>> {
    let Some(bias) = bias else { return Some(None) };
    if bias.dims() != [d_out] || bias.dtype() != dtype {
        return None;
    }
    let b: FlexTensor = bias.clone().try_into_primitive::<Flex>().ok()?;
    let values = RowsF32::new(b, dtype)?;
    Some(Some(values.to_vec()))
}

/// For plain tensors on Burn's CPU backend: the rows of `x` as f32, the weight's storage, its
/// layout and the offset of its first element; `None` for anything the kernels do not read.
pub(crate) fn cpu_operands(x: &Tensor<2>, weight: &Tensor<2>) -> Option<(RowsF32, FlexTensor, WeightLayout, usize)> {
    let (wt, layout, offset) = weight_operand(weight)?;
    Some((rows_f32(x)?, wt, layout, offset))
}

/// The rows of a plain tensor on Burn's CPU backend as f32 (see [`RowsF32`]).
pub(crate) fn rows_f32(x: &Tensor<2>) -> Option<RowsF32> {
    let xt: FlexTensor = x.clone().try_into_primitive::<Flex>().ok()?;
    RowsF32::new(xt, x.dtype())
}

/// A weight `[in, out]` on Burn's CPU backend: its storage, layout and first element's offset.
pub(crate) fn weight_operand(weight: &Tensor<2>) -> Option<(FlexTensor, WeightLayout, usize)> {
    let [d_in, d_out] = weight.dims();
    let wt: FlexTensor = weight.clone().try_into_primitive::<Flex>().ok()?;
    let (layout, offset) = weight_layout(&wt, d_in, d_out)?;
    Some((wt, layout, offset))
}

/// A plain tensor on Burn's CPU backend, contiguous (copied only when it is a strided view):
/// `as_slice` then succeeds for its dtype. `None` for autodiff tensors and other backends.
pub(crate) fn contiguous_flex<const D: usize>(t: &Tensor<D>) -> Option<FlexTensor> {
    let t: FlexTensor = t.clone().try_into_primitive::<Flex>().ok()?;
    Some(if t.is_contiguous() { t } else { t.to_contiguous() })
}

/// The rows of `x` as contiguous f32: f32 storage is read in place, 16-bit rows are widened.
pub(crate) enum RowsF32 {
    Shared(FlexTensor),
    Widened(Vec<f32>),
}

impl RowsF32 {
    pub(crate) fn new(x: FlexTensor, dtype: DType) -> Option<Self> {
        Some(match dtype {
            DType::F32 => {
                x.as_slice::<f32>()?;
                RowsF32::Shared(x)
            }
            DType::F16 => RowsF32::Widened(widened(x.as_slice::<f16>()?)),
            DType::BF16 => RowsF32::Widened(widened(x.as_slice::<bf16>()?)),
            _ => return None,
        })
    }
}

impl std::ops::Deref for RowsF32 {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match self {
            RowsF32::Shared(x) => x.as_slice::<f32>().expect("checked contiguous in RowsF32::new"),
            RowsF32::Widened(v) => v,
        }
    }
}

/// `y [rows, cols]` (f32) as a tensor of `dtype` on `device`.
pub(crate) fn to_tensor(y: Vec<f32>, rows: usize, cols: usize, dtype: DType, device: &Device) -> Tensor<2> {
    let data = match dtype {
        DType::F16 => TensorData::new(narrow::<f16>(&y), [rows, cols]),
        DType::BF16 => TensorData::new(narrow::<bf16>(&y), [rows, cols]),
        _ => TensorData::new(y, [rows, cols]),
    };
    Tensor::from_data(data, (device, dtype))
}

/// The weight's layout and the storage offset of its first element, if it is one the kernels read.
fn weight_layout(w: &FlexTensor, d_in: usize, d_out: usize) -> Option<(WeightLayout, usize)> {
    let strides = w.layout().strides();
    let offset = w.layout().start_offset();
    let (s_in, s_out) = (strides[0], strides[1]);
    if (s_out == 1 || d_out == 1) && (s_in == d_out as isize || d_in == 1) {
        Some((WeightLayout::InputMajor, offset))
    } else if (s_in == 1 || d_in == 1) && (s_out == d_in as isize || d_out == 1) {
        Some((WeightLayout::OutputMajor, offset))
    } else {
        None
    }
}
