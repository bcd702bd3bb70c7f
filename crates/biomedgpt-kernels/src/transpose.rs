//! Out-of-place f32 matrix transposes in 8 x 8 register blocks (AVX), for the kernels that hand
//! gemm its operands in the layout it reads without re-packing.

use rayon::prelude::*;
use std::mem::MaybeUninit;

/// The first `cols` columns of `src [rows, stride]` (row-major) to `dst [cols, padded]`
/// (row-major): `dst[c * padded + r] = src[r * stride + c]` for `r < rows`, `c < cols`; the
/// rest of `dst` is left as it is. Threads over blocks of destination rows.
pub fn transpose_into(src: &[f32], rows: usize, stride: usize, cols: usize, dst: &mut [f32], padded: usize) {
    // SAFETY: the same memory viewed as possibly uninitialized; only f32 values are written.
    let dst = unsafe { &mut *(dst as *mut [f32] as *mut [MaybeUninit<f32>]) };
    transpose_into_uninit(src, rows, stride, cols, dst, padded, None)
}

/// [`transpose_into`] into memory not yet initialized (every element with `r < rows` and
/// `c < cols` is written; with `rows == padded` that is all of `dst[..cols * padded]`), plus
/// `add[r]` to every element from source row `r` if given.
pub fn transpose_into_uninit(src: &[f32], rows: usize, stride: usize, cols: usize, dst: &mut [MaybeUninit<f32>], padded: usize, add: Option<&[f32]>) {
    assert!(add.is_none_or(|a| a.len() >= rows), "one value to add per source row");
    assert!(cols <= stride && rows <= padded, "transpose of {rows} x {cols} (stride {stride}) into rows of {padded}");
    assert!(rows == 0 || src.len() >= (rows - 1) * stride + cols, "source holds {} values", src.len());
    assert!(dst.len() >= cols * padded, "destination holds {} values, expected {cols} x {padded}", dst.len());
    // 64 destination rows per task: the task reads 256 contiguous bytes of every source row.
    const TASK: usize = 64;
    dst[..cols * padded].par_chunks_mut(TASK * padded).enumerate().for_each(|(task, dst)| {
        let c0 = task * TASK;
        let width = dst.len() / padded;
        block_add(&src[c0..], rows, stride, width, dst, padded, add);
    });
}

/// [`transpose_into`] on the calling thread.
pub fn block(src: &[f32], rows: usize, stride: usize, cols: usize, dst: &mut [MaybeUninit<f32>], padded: usize) {
    block_add(src, rows, stride, cols, dst, padded, None)
}

/// [`block`] for 32-bit values of any kind (packed pairs of 16-bit values): moved bit for bit.
pub fn block_u32(src: &[u32], rows: usize, stride: usize, cols: usize, dst: &mut [MaybeUninit<u32>], padded: usize) {
    // SAFETY: u32 and f32 have the same size and alignment and every bit pattern is a valid
    // f32; the transpose only moves values (no arithmetic without `add`).
    let (src, dst) = unsafe {
        (
            std::slice::from_raw_parts(src.as_ptr() as *const f32, src.len()),
            std::slice::from_raw_parts_mut(dst.as_mut_ptr() as *mut MaybeUninit<f32>, dst.len()),
        )
    };
    block_add(src, rows, stride, cols, dst, padded, None)
}

fn block_add(src: &[f32], rows: usize, stride: usize, cols: usize, dst: &mut [MaybeUninit<f32>], padded: usize, add: Option<&[f32]>) {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::isa::current() >= crate::isa::Isa::Avx2 {
            // SAFETY: the CPU supports AVX (part of the avx2 level, checked above); bounds are checked inside.
            return unsafe { x86::block(src, rows, stride, cols, dst, padded, add) };
        }
    }
    scalar(src, 0..rows, stride, 0..cols, dst, padded, add)
}

fn scalar(src: &[f32], rows: std::ops::Range<usize>, stride: usize, cols: std::ops::Range<usize>, dst: &mut [MaybeUninit<f32>], padded: usize, add: Option<&[f32]>) {
    for r in rows {
        for c in cols.clone() {
            let v = src[r * stride + c];
            // Without `add`, values are moved as they are (bit for bit, -0.0 included).
            dst[c * padded + r].write(add.map_or(v, |a| v + a[r]));
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// See [`super::block`]: whole 8 x 8 blocks in registers, the ragged edges scalar.
    ///
    /// # Safety
    /// The CPU must support AVX.
    #[target_feature(enable = "avx")]
    pub unsafe fn block(src: &[f32], rows: usize, stride: usize, cols: usize, dst: &mut [MaybeUninit<f32>], padded: usize, add: Option<&[f32]>) {
        assert!(rows == 0 || src.len() >= (rows - 1) * stride + cols);
        assert!(dst.len() >= cols.saturating_sub(1) * padded + rows);
        assert!(add.is_none_or(|a| a.len() >= rows));
        let (rows8, cols8) = (rows / 8 * 8, cols / 8 * 8);
        for r in (0..rows8).step_by(8) {
            // SAFETY: r + 8 <= rows <= add.len() (asserted above).
            let a = add.map(|a| unsafe { _mm256_loadu_ps(a.as_ptr().add(r)) });
            for c in (0..cols8).step_by(8) {
                // SAFETY: rows r..r+8 and columns c..c+8 are inside both (asserted above).
                unsafe { transpose8x8(src.as_ptr().add(r * stride + c), stride, dst.as_mut_ptr().add(c * padded + r) as *mut f32, padded, a) };
            }
        }
        super::scalar(src, rows8..rows, stride, 0..cols, dst, padded, add);
        super::scalar(src, 0..rows8, stride, cols8..cols, dst, padded, add);
    }

    /// Eight registers of eight 32-bit lanes transposed: lane `j` of result `i` is lane `i` of
    /// `r[j]` (the classic unpack / shuffle / lane-permute network; bits are moved, never
    /// computed on, so integer lanes pass through it too).
    #[target_feature(enable = "avx")]
    #[inline]
    pub(crate) fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(s0, s4),
            _mm256_permute2f128_ps::<0x20>(s1, s5),
            _mm256_permute2f128_ps::<0x20>(s2, s6),
            _mm256_permute2f128_ps::<0x20>(s3, s7),
            _mm256_permute2f128_ps::<0x31>(s0, s4),
            _mm256_permute2f128_ps::<0x31>(s1, s5),
            _mm256_permute2f128_ps::<0x31>(s2, s6),
            _mm256_permute2f128_ps::<0x31>(s3, s7),
        ]
    }

    /// One 8 x 8 block transposed from memory to memory ([`transpose8`]), plus `add`.
    #[target_feature(enable = "avx")]
    unsafe fn transpose8x8(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize, add: Option<__m256>) {
        // SAFETY: the caller passes 8 readable rows of 8 and 8 writable rows of 8.
        unsafe {
            let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.add(i * src_stride)));
            let out = transpose8(r);
            for (i, v) in out.into_iter().enumerate() {
                let v = match add {
                    Some(a) => _mm256_add_ps(v, a),
                    None => v,
                };
                _mm256_storeu_ps(dst.add(i * dst_stride), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_the_scalar_transpose() {
        for &(rows, stride, cols, padded) in &[(1, 1, 1, 1), (8, 8, 8, 8), (13, 21, 19, 16), (70, 130, 129, 80), (3, 200, 200, 5)] {
            let src: Vec<f32> = (0..rows * stride).map(|i| i as f32).collect();
            let mut ours = vec![-1f32; cols * padded];
            let mut want = ours.clone();
            transpose_into(&src, rows, stride, cols, &mut ours, padded);
            // SAFETY: as in `transpose_into`.
            scalar(&src, 0..rows, stride, 0..cols, unsafe { &mut *(&mut want[..] as *mut [f32] as *mut [MaybeUninit<f32>]) }, padded, None);
            assert_eq!(ours, want, "{rows} x {cols}, stride {stride}, padded {padded}");
            let add: Vec<f32> = (0..rows).map(|r| r as f32 * 0.5).collect();
            let mut ours = vec![-1f32; cols * padded];
            // SAFETY: as above.
            transpose_into_uninit(&src, rows, stride, cols, unsafe { &mut *(&mut ours[..] as *mut [f32] as *mut [MaybeUninit<f32>]) }, padded, Some(&add));
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(ours[c * padded + r], src[r * stride + c] + add[r], "with an added row value");
                }
            }
        }
    }
}
