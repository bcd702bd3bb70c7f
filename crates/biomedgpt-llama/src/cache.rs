//! The key/value cache and the bookkeeping of which cached positions are real tokens.
//!
//! Batches are left-padded (as HF generation does). For each row the cache remembers which key
//! positions hold padding and the position id of the next real token, so every step computes
//! HF's position ids (`cumsum(attention_mask) - 1`, padding at 1) and its causal + padding mask.

use burn::tensor::{Int, Tensor, TensorData};

/// Which of the new positions of a step are real tokens, `[B][T]` (false = padding).
#[derive(Debug, Clone)]
pub struct StepMask(pub Vec<Vec<bool>>);

/// Cloning is cheap (tensors are shared) and the clones then grow independently: scoring
/// several continuations of one context reuses the context's keys and values.
#[derive(Debug, Clone)]
pub struct KvCache {
    /// Per layer `(keys, values)`, each `[B, kv_heads, S, head_dim]`.
    pub(crate) layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    key_valid: Vec<Vec<bool>>,
    next_position: Vec<i64>,
}

/// Host-side inputs of one forward step.
pub struct StepPlan {
    /// Position ids `[B * T]`.
    pub positions: Vec<i64>,
    /// Additive mask `[B, 1, T, total_len]`, `None` when no position is masked.
    pub additive_mask: Option<Vec<f32>>,
    pub total_len: usize,
}

impl KvCache {
    pub fn new(num_layers: usize, batch: usize) -> Self {
        KvCache {
            layers: vec![None; num_layers],
            key_valid: vec![Vec::new(); batch],
            next_position: vec![0; batch],
        }
    }

    /// Per layer `(keys, values)`, each `[B, kv_heads, S, head_dim]`, for a decoder's layers to
    /// read and extend.
    pub fn layers_mut(&mut self) -> &mut [Option<(Tensor<4>, Tensor<4>)>] {
        &mut self.layers
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.key_valid.first().map_or(0, Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn batch_size(&self) -> usize {
        self.key_valid.len()
    }

    /// Keeps rows `rows` (in that order, repeats allowed): beam search reorders hypotheses.
    pub fn reorder(&mut self, rows: &[usize]) {
        let device = match self.layers.iter().flatten().next() {
            Some((k, _)) => k.device(),
            None => return self.reorder_host(rows),
        };
        let index = Tensor::<1, Int>::from_data(
            TensorData::new(rows.iter().map(|&r| r as i64).collect::<Vec<_>>(), [rows.len()]),
            &device,
        );
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.clone().select(0, index.clone());
            *v = v.clone().select(0, index.clone());
        }
        self.reorder_host(rows);
    }

    fn reorder_host(&mut self, rows: &[usize]) {
        self.key_valid = rows.iter().map(|&r| self.key_valid[r].clone()).collect();
        self.next_position = rows.iter().map(|&r| self.next_position[r]).collect();
    }

    /// Records `t` new positions for a batch of `b` rows and returns their position ids and mask.
    pub fn plan_step(&mut self, b: usize, t: usize, mask: Option<&StepMask>) -> StepPlan {
        assert_eq!(b, self.batch_size(), "batch size differs from the cache's");
        if let Some(m) = mask {
            assert!(m.0.len() == b && m.0.iter().all(|r| r.len() == t), "step mask must be [B][T]");
        }
        let past = self.len();
        let total_len = past + t;
        let mut positions = Vec::with_capacity(b * t);
        for row in 0..b {
            for i in 0..t {
                let real = mask.is_none_or(|m| m.0[row][i]);
                if real {
                    positions.push(self.next_position[row]);
                    self.next_position[row] += 1;
                } else {
                    positions.push(1);
                }
                self.key_valid[row].push(real);
            }
        }
        let any_padding = self.key_valid.iter().any(|r| r.iter().any(|v| !v));
        let additive_mask = (t > 1 || any_padding).then(|| {
            let mut m = vec![0f32; b * t * total_len];
            for row in 0..b {
                for i in 0..t {
                    let query_abs = past + i;
                    for j in 0..total_len {
                        if j > query_abs || !self.key_valid[row][j] {
                            m[(row * t + i) * total_len + j] = f32::MIN;
                        }
                    }
                }
            }
            m
        });
        StepPlan {
            positions,
            additive_mask,
            total_len,
        }
    }
}
