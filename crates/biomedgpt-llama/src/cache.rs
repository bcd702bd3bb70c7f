//! The key/value cache and the bookkeeping of which cached positions are real tokens.
//!
//! Batches are left-padded (as HF generation does). For each row the cache remembers which key
//! positions hold padding and the position id of the next real token, so every step computes
//! HF's position ids (`cumsum(attention_mask) - 1`, padding at 1) and its causal + padding mask.

use burn::tensor::{Int, Tensor, TensorData};

/// Which of the new positions of a step are real tokens, `[B][T]` (false = padding).
#[derive(Debug, Clone)]
pub struct StepMask(pub Vec<Vec<bool>>);

/// One layer's keys and values, `[B, kv_heads, capacity, head_dim]` buffers whose first `len`
/// positions are filled. A step writes its positions into the buffers in place (Burn's
/// `slice_assign` reuses a buffer no other tensor shares) and attention reads views of the
/// filled part, so a decoding step copies its one new position, not the whole cache as a
/// concatenation would (LLaMA-2-7B: 64 MB per step at 128 cached positions). Full buffers
/// grow by half, plus 64 positions; the first step's keys and values are kept as they come.
#[derive(Debug, Clone)]
pub struct LayerCache {
    keys: Tensor<4>,
    values: Tensor<4>,
    len: usize,
}

impl LayerCache {
    /// Appends `keys`/`values` `[B, kv_heads, T, head_dim]` to the layer's cache (starting it
    /// when `slot` is empty) and returns views of every cached position, `[B, kv_heads, len,
    /// head_dim]`. Drop the views before the next append, or that append copies the buffers.
    pub fn append(slot: &mut Option<LayerCache>, keys: Tensor<4>, values: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let [b, h, t, d] = keys.dims();
        let mut cache = match slot.take() {
            Some(c) if c.len + t <= c.capacity() => c,
            Some(c) => {
                let needed = c.len + t;
                c.grown(needed)
            }
            // A prompt's keys and values are kept as they are: no buffer to fill and copy into
            // for a forward pass that may be the only one (scoring, logits); the first
            // decoding step moves them into grown buffers.
            None => {
                *slot = Some(LayerCache { keys, values, len: t });
                return slot.as_ref().expect("just set").views();
            }
        };
        let (start, end) = (cache.len, cache.len + t);
        cache.keys = cache.keys.slice_assign([0..b, 0..h, start..end, 0..d], keys);
        cache.values = cache.values.slice_assign([0..b, 0..h, start..end, 0..values.dims()[3]], values);
        cache.len = end;
        let views = cache.views();
        *slot = Some(cache);
        views
    }

    /// Cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn capacity(&self) -> usize {
        self.keys.dims()[2]
    }

    /// Views of the filled positions (no copy).
    fn views(&self) -> (Tensor<4>, Tensor<4>) {
        (self.keys.clone().narrow(2, 0, self.len), self.values.clone().narrow(2, 0, self.len))
    }

    fn buffer(like: &Tensor<4>, capacity: usize) -> Tensor<4> {
        let [b, h, _, d] = like.dims();
        Tensor::zeros([b, h, capacity, d], (&like.device(), like.dtype()))
    }

    fn grown_capacity(needed: usize) -> usize {
        needed + needed / 2 + 64
    }

    /// The same positions in buffers with room for `needed`.
    fn grown(self, needed: usize) -> LayerCache {
        let capacity = Self::grown_capacity(needed);
        let (keys, values) = self.views();
        let copy = |filled: Tensor<4>| {
            let [b, h, len, d] = filled.dims();
            Self::buffer(&filled, capacity).slice_assign([0..b, 0..h, 0..len, 0..d], filled)
        };
        LayerCache {
            keys: copy(keys),
            values: copy(values),
            len: self.len,
        }
    }

    /// Keeps batch rows `rows` (in that order, repeats allowed).
    fn select_rows(&mut self, index: &Tensor<1, Int>) {
        self.keys = self.keys.clone().select(0, index.clone());
        self.values = self.values.clone().select(0, index.clone());
    }
}

/// Cloning is cheap (tensors are shared) and the clones then grow independently: scoring
/// several continuations of one context reuses the context's keys and values (the first
/// append to a shared buffer copies it).
#[derive(Debug, Clone)]
pub struct KvCache {
    /// Per layer keys and values.
    pub(crate) layers: Vec<Option<LayerCache>>,
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

    /// Per layer keys and values, for a decoder's layers to extend ([`LayerCache::append`]).
    pub fn layers_mut(&mut self) -> &mut [Option<LayerCache>] {
        &mut self.layers
    }

    /// A one-sequence cache holding `len` real positions, from each layer's keys and values
    /// `[1, kv_heads, capacity, head_dim]` whose first `len` positions are filled (a prefix kept
    /// by [`crate::prefix_cache::PrefixCache`]; later positions append in place up to
    /// `capacity`).
    pub fn from_positions(layers: Vec<(Tensor<4>, Tensor<4>)>, len: usize) -> Self {
        let layers = layers
            .into_iter()
            .map(|(keys, values)| {
                let capacity = keys.dims()[2];
                assert!(keys.dims()[0] == 1 && capacity >= len && values.dims()[2] == capacity, "one sequence of {len} positions");
                Some(LayerCache { keys, values, len })
            })
            .collect();
        KvCache { layers, key_valid: vec![vec![true; len]], next_position: vec![len as i64] }
    }

    /// The positions the first layer's buffers hold room for.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.layers.first().and_then(Option::as_ref).map_or(0, LayerCache::capacity)
    }

    /// Positions to make room for when a cache is built for a prompt of `prompt_len` positions
    /// and at most `answer` more: what the first growth past the prompt would allocate, or
    /// less when the answer is known to be shorter.
    pub fn room_for(prompt_len: usize, answer: usize) -> usize {
        LayerCache::grown_capacity(prompt_len).min(prompt_len.saturating_add(answer))
    }

    /// Views of positions `start..start + len` of every layer, `[1, kv_heads, len, head_dim]`,
    /// for a one-sequence cache whose positions are all real tokens (`None` otherwise).
    pub fn positions(&self, start: usize, len: usize) -> Option<Vec<(Tensor<4>, Tensor<4>)>> {
        if self.batch_size() != 1 || start + len > self.len() || self.key_valid[0].iter().any(|v| !v) {
            return None;
        }
        self.layers
            .iter()
            .map(|layer| {
                let layer = layer.as_ref()?;
                Some((layer.keys.clone().narrow(2, start, len), layer.values.clone().narrow(2, start, len)))
            })
            .collect()
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
            Some(layer) => layer.keys.device(),
            None => return self.reorder_host(rows),
        };
        let index = Tensor::<1, Int>::from_data(
            TensorData::new(rows.iter().map(|&r| r as i64).collect::<Vec<_>>(), [rows.len()]),
            &device,
        );
        for layer in self.layers.iter_mut().flatten() {
            layer.select_rows(&index);
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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::flex::{Flex, FlexTensor};
    use burn::tensor::{DType, Device};

    fn chunk(t: usize, seed: usize) -> Tensor<4> {
        let (b, h, d) = (2, 3, 4);
        let v: Vec<f32> = (0..b * h * t * d).map(|i| (i * 31 + seed * 7) as f32 % 97.0).collect();
        Tensor::<4>::from_data(TensorData::new(v, [b, h, t, d]), &Device::flex()).cast(DType::BF16)
    }

    fn values(t: Tensor<4>) -> Vec<f32> {
        t.cast(DType::F32).into_data().try_to_vec().unwrap()
    }

    fn storage_address(t: &Tensor<4>) -> usize {
        let f: FlexTensor = t.clone().try_into_primitive::<Flex>().unwrap();
        f.storage::<burn::tensor::bf16>().as_ptr() as usize
    }

    /// Appends equal concatenation, across a growth of the buffers, and a clone grows apart
    /// from the original; appending within the capacity writes into the same buffer.
    #[test]
    fn appends_equal_concatenation_in_place() {
        let mut slot = None;
        let mut all_k = Vec::new();
        for (i, t) in [5usize, 1, 1, 200, 1].into_iter().enumerate() {
            let (k, v) = (chunk(t, i), chunk(t, i + 10));
            all_k.push(k.clone());
            let (k_view, v_view) = LayerCache::append(&mut slot, k, v);
            assert_eq!(k_view.dims()[2], slot.as_ref().unwrap().len());
            assert_eq!(values(k_view), values(Tensor::cat(all_k.clone(), 2)), "keys after append {i}");
            assert_eq!(v_view.dims(), [2, 3, slot.as_ref().unwrap().len(), 4]);
        }
        let before = storage_address(&slot.as_ref().unwrap().keys);
        let (k, _) = LayerCache::append(&mut slot, chunk(1, 50), chunk(1, 51));
        drop(k);
        assert_eq!(storage_address(&slot.as_ref().unwrap().keys), before, "no copy within the capacity");

        let mut copy = slot.clone();
        let (k_copy, _) = LayerCache::append(&mut copy, chunk(1, 60), chunk(1, 61));
        let (k_orig, _) = LayerCache::append(&mut slot, chunk(1, 70), chunk(1, 71));
        let last = |k: Tensor<4>| values(k.clone().narrow(2, k.dims()[2] - 1, 1));
        assert_eq!(last(k_copy), values(chunk(1, 60)));
        assert_eq!(last(k_orig), values(chunk(1, 70)));
    }
}
