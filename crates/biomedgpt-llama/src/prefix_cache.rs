//! Prefix caching: the keys and values of prompt blocks kept across requests, so that a prompt
//! which starts as an earlier one did (the same system prompt, a chat's earlier turns) is
//! prefilled only from where it differs. vLLM's automatic prefix caching: a prompt is cut into
//! blocks of [`PrefixCache::block`] positions from its start, and each whole block is known by a
//! hash of its content chained with the previous block's hash, so a key stands for everything
//! before it too. Past the last whole block that matches, the positions a held next block shares
//! with the prompt are restored as well (that block's first positions: a radix tree's token
//! granularity, as SGLang and llama-server reuse prompts), so a prompt that differs from an
//! earlier one in its last few positions prefills only those. Blocks are dropped least recently
//! used first when the cache would outgrow its bytes; a block is touched after its children, so
//! a prefix outlives the longer prompts built on it.
//!
//! What is cached is exact: a prompt's rest prefilled after restored blocks equals, bit for bit,
//! the same rows prefilled with the whole prompt, because prompts run through the CPU prompt
//! kernels whatever their number of positions ([`crate::Llama::prefill`]), and those compute
//! each row the same whatever rows are beside it (`tests/prefix_invariance.rs`). So a hit leaves
//! as little as one position to prefill (the last, whose logits give the first token).
//! Keys and values are kept on the host (as `TensorData` in the cache's dtype) and moved to the
//! model's device when restored.

use std::collections::{BTreeMap, HashMap};

use burn::tensor::{Device, Tensor, TensorData};
use sha2::{Digest, Sha256};

use crate::KvCache;

/// A block's identity: 128 bits of SHA-256 over the previous block's key and this block's content.
pub type BlockKey = [u8; 16];

/// Positions per block (vLLM's default).
pub const DEFAULT_BLOCK: usize = 16;

/// A prompt as the cache knows it: the keys of its whole blocks and every position's content.
#[derive(Clone, Debug, Default)]
pub struct PromptKeys {
    /// The keys of the prompt's whole blocks ([`block_keys`]).
    pub blocks: Vec<BlockKey>,
    kind: Vec<u8>,
    content: Vec<u8>,
    per_position: usize,
}

impl PromptKeys {
    /// `content` holds `per_position` bytes for each position of the prompt (see [`block_keys`]).
    pub fn new(kind: &[u8], content: Vec<u8>, per_position: usize, block: usize) -> Self {
        let whole = content.len() / per_position.max(1) / block * block;
        let blocks = block_keys(kind, &content[..whole * per_position], per_position, block);
        PromptKeys { blocks, kind: kind.to_vec(), content, per_position }
    }

    /// No positions (prefix caching off for this prompt).
    pub fn is_empty(&self) -> bool {
        self.content.is_empty()
    }

    /// Positions of the prompt.
    pub fn len(&self) -> usize {
        self.content.len() / self.per_position.max(1)
    }

    /// The key of the block before block `j` (the root, zeros, before the first).
    fn before(&self, j: usize) -> BlockKey {
        if j == 0 { [0; 16] } else { self.blocks[j - 1] }
    }

    /// The content of positions `from..to`.
    fn positions(&self, from: usize, to: usize) -> &[u8] {
        &self.content[from * self.per_position..to * self.per_position]
    }
}

/// 128 bits of SHA-256 over `tag`, the block `previous`, `kind` (with its length, so that kind and
/// content cannot trade bytes) and `content`: every key the cache makes.
fn chained_key(tag: &[u8], previous: &BlockKey, kind: &[u8], content: &[u8]) -> BlockKey {
    let mut h = Sha256::new();
    h.update(tag);
    h.update(previous);
    h.update((kind.len() as u64).to_le_bytes());
    h.update(kind);
    h.update(content);
    let mut key = [0u8; 16];
    key.copy_from_slice(&h.finalize()[..16]);
    key
}

/// Which held blocks follow the block `previous` (the root for a prompt's first block) for
/// prompts of `kind`.
fn children_key(previous: &BlockKey, kind: &[u8]) -> BlockKey {
    chained_key(b"children", previous, kind, &[])
}

/// What a prompt finds in the cache: its first `blocks` blocks, then the first `partial.1`
/// positions of the held block `partial.0` (one that follows the last of them and begins as the
/// prompt's next positions do).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hit {
    pub blocks: usize,
    pub partial: Option<(BlockKey, usize)>,
}

impl Hit {
    /// Positions restored.
    pub fn positions(&self, block: usize) -> usize {
        self.blocks * block + self.partial.map_or(0, |(_, n)| n)
    }
}

/// The keys of a prompt's whole blocks. `content` holds `per_position` bytes for each position (a
/// token id, or an input embedding's values: whatever fixes the position's keys and values),
/// `kind` tells apart contents that could share bytes (ids from embeddings).
pub fn block_keys(kind: &[u8], content: &[u8], per_position: usize, block: usize) -> Vec<BlockKey> {
    assert!(per_position > 0 && block > 0 && content.len() % per_position == 0, "content of whole positions");
    let mut keys = Vec::new();
    let mut previous: BlockKey = [0; 16];
    for chunk in content.chunks_exact(per_position * block) {
        previous = chained_key(b"", &previous, kind, chunk);
        keys.push(previous);
    }
    keys
}

/// [`PromptKeys`] of a prompt's token ids.
pub fn ids_keys(ids: &[u32], block: usize) -> PromptKeys {
    let bytes: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
    PromptKeys::new(b"ids", bytes, 4, block)
}

/// [`PromptKeys`] of a prompt's input embeddings `[1, T, hidden]` (a chat's, with molecules and
/// proteins spliced in), by their values in their dtype.
pub fn embeds_keys(embeds: &Tensor<3>, block: usize) -> PromptKeys {
    let [_, t, _] = embeds.dims();
    if t == 0 {
        return PromptKeys::default();
    }
    let data = embeds.clone().into_data();
    let kind = format!("embeds {:?}", data.dtype());
    let bytes = data.as_bytes().to_vec();
    let per_position = bytes.len() / t;
    PromptKeys::new(kind.as_bytes(), bytes, per_position, block)
}

/// The length of the prefill chunk that starts at `start` of a `prompt_len` prompt: at most
/// `chunk` positions (at least one). How a prompt is cut does not change its numbers.
pub fn chunk_len(start: usize, prompt_len: usize, chunk: usize) -> usize {
    assert!(start < prompt_len, "a chunk starts inside the prompt");
    chunk.max(1).min(prompt_len - start)
}

struct Entry {
    /// Per layer keys and values, `[1, kv_heads, block, head_dim]`.
    layers: Vec<(TensorData, TensorData)>,
    /// The block's positions' content (see [`PromptKeys`]), to restore its first positions for a
    /// prompt that shares only those.
    content: Vec<u8>,
    /// Its [`children_key`]: the blocks held after the same previous block.
    siblings: BlockKey,
    bytes: usize,
    used_at: u64,
}

/// Counters since the cache was made.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PrefixStats {
    /// Positions restored instead of prefilled.
    pub hit_tokens: u64,
    /// Blocks dropped to make room.
    pub evictions: u64,
}

pub struct PrefixCache {
    block: usize,
    capacity: usize,
    used: usize,
    entries: HashMap<BlockKey, Entry>,
    /// [`children_key`] -> the held blocks that follow that block.
    children: HashMap<BlockKey, Vec<BlockKey>>,
    /// `used_at` -> key, oldest first.
    order: BTreeMap<u64, BlockKey>,
    clock: u64,
    stats: PrefixStats,
}

impl PrefixCache {
    /// A cache of at most `capacity_bytes` of keys and values in blocks of `block` positions
    /// (0 bytes: nothing is kept).
    pub fn new(block: usize, capacity_bytes: usize) -> Self {
        assert!(block > 0, "a block has positions");
        PrefixCache { block, capacity: capacity_bytes, used: 0, entries: HashMap::new(), children: HashMap::new(), order: BTreeMap::new(), clock: 0, stats: PrefixStats::default() }
    }

    pub fn block(&self) -> usize {
        self.block
    }

    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// Bytes of keys and values held.
    pub fn bytes(&self) -> usize {
        self.used
    }

    /// Blocks held.
    pub fn blocks(&self) -> usize {
        self.entries.len()
    }

    pub fn stats(&self) -> PrefixStats {
        self.stats
    }

    /// What a `prompt_len` prompt with keys `keys` can restore: its leading blocks that are held,
    /// then as many positions as a held block that follows them shares with the prompt's next
    /// ones, leaving at least one position to prefill (the last position's logits come from a
    /// prefill).
    pub fn lookup(&self, keys: &PromptKeys, prompt_len: usize) -> Hit {
        let prompt_len = prompt_len.min(keys.len());
        if !self.enabled() || prompt_len == 0 {
            return Hit::default();
        }
        let most = (prompt_len - 1) / self.block;
        let blocks = keys.blocks.iter().take(most).take_while(|k| self.entries.contains_key(*k)).count();
        let start = blocks * self.block;
        let room = (prompt_len - 1 - start).min(self.block);
        if room == 0 {
            return Hit { blocks, partial: None };
        }
        let previous = keys.before(blocks);
        let next = keys.positions(start, start + room);
        let shared = |content: &[u8]| {
            let per = keys.per_position;
            (0..room).take_while(|&p| content.get(p * per..(p + 1) * per) == Some(&next[p * per..(p + 1) * per])).count()
        };
        let partial = self
            .children
            .get(&children_key(&previous, &keys.kind))
            .into_iter()
            .flatten()
            .map(|key| (*key, shared(&self.entries[key].content)))
            .filter(|&(_, n)| n > 0)
            .max_by_key(|&(_, n)| n);
        Hit { blocks, partial }
    }

    /// A one-sequence cache holding what `hit` says of the prompt with keys `keys` (all held: see
    /// [`Self::lookup`]) on `device`, counted as hits.
    pub fn restore(&mut self, keys: &PromptKeys, hit: &Hit, capacity: usize, device: &Device) -> KvCache {
        assert!(hit.positions(self.block) > 0 && hit.blocks <= keys.blocks.len(), "restore at least one of the prompt's positions");
        let held = |k: &BlockKey| self.entries.get(k).expect("what lookup found is held");
        let mut parts: Vec<(&Entry, usize)> = keys.blocks[..hit.blocks].iter().map(|k| (held(k), self.block)).collect();
        if let Some((key, n)) = hit.partial {
            parts.push((held(&key), n));
        }
        let positions = hit.positions(self.block);
        let capacity = capacity.max(positions);
        // Each layer's blocks copied once, straight into buffers with room for `capacity`
        // positions (the prompt's rest and its answer then append in place).
        let buffer = |layer: usize, values: bool| {
            let first = &parts[0].0.layers[layer];
            let first = if values { &first.1 } else { &first.0 };
            let (dtype, shape) = (first.dtype(), first.shape().clone());
            let (heads, width) = (shape[1], shape[3] * dtype.size());
            let mut bytes = vec![0u8; heads * capacity * width];
            let mut at = 0;
            for (entry, n) in &parts {
                let data = &entry.layers[layer];
                let src = if values { data.1.as_bytes() } else { data.0.as_bytes() };
                // Positions the entry holds per head (a prompt's tail block holds fewer).
                let stored = src.len() / (heads * width);
                for h in 0..heads {
                    let to = (h * capacity + at) * width;
                    bytes[to..to + n * width].copy_from_slice(&src[h * stored * width..(h * stored + n) * width]);
                }
                at += n;
            }
            Tensor::<4>::from_data(TensorData::from_bytes_vec(bytes, [1, heads, capacity, shape[3]], dtype), (device, dtype))
        };
        let num_layers = parts[0].0.layers.len();
        let layers = (0..num_layers).map(|l| (buffer(l, false), buffer(l, true))).collect();
        if let Some((key, _)) = hit.partial {
            self.touch_chain(&[key]);
        }
        self.touch_chain(&keys.blocks[..hit.blocks]);
        self.stats.hit_tokens += positions as u64;
        KvCache::from_positions(layers, positions)
    }

    /// Stores the blocks of the prompt with keys `keys` that `cache` (one sequence, the same
    /// prompt) holds in full and the cache does not, and once the whole prompt is in `cache`, its
    /// last positions after the whole blocks (a shorter block, found only by [`Self::lookup`]'s
    /// position-wise search: a longer prompt that goes on from this one, such as a chat's next
    /// turn, restores all of it). The least recently used blocks are dropped to make room; a
    /// block larger than the whole capacity is not stored.
    pub fn store(&mut self, keys: &PromptKeys, cache: &KvCache) {
        if !self.enabled() {
            return;
        }
        let whole = (cache.len() / self.block).min(keys.blocks.len());
        // The prompt's blocks already held become the most recent first, so that making room
        // for its new blocks never drops their own prefix (which would leave them unreachable).
        self.touch_chain(&keys.blocks[..whole]);
        for (j, key) in keys.blocks[..whole].iter().enumerate() {
            if !self.entries.contains_key(key) && !self.insert(*key, keys, keys.before(j), j * self.block, self.block, cache) {
                return;
            }
        }
        let (start, len) = (whole * self.block, keys.len());
        if whole == keys.blocks.len() && cache.len() >= len && len > start {
            let key = chained_key(b"tail", &keys.before(whole), &keys.kind, keys.positions(start, len));
            if !self.entries.contains_key(&key) {
                self.insert(key, keys, keys.before(whole), start, len - start, cache);
            }
        }
        self.touch_chain(&keys.blocks[..whole]);
    }

    /// Holds positions `start..start + n` of `cache` (the prompt `keys`'s) as the block `key`
    /// after the block `previous`, dropping the least recently used blocks to make room; false
    /// (nothing stored) when they are more than the whole capacity or not in `cache`.
    fn insert(&mut self, key: BlockKey, keys: &PromptKeys, previous: BlockKey, start: usize, n: usize, cache: &KvCache) -> bool {
        let Some(views) = cache.positions(start, n) else { return false };
        let layers: Vec<(TensorData, TensorData)> = views.into_iter().map(|(k, v)| (k.into_data(), v.into_data())).collect();
        let content = keys.positions(start, start + n).to_vec();
        let bytes = layers.iter().map(|(k, v)| k.as_bytes().len() + v.as_bytes().len()).sum::<usize>() + content.len();
        if bytes > self.capacity {
            return false;
        }
        while self.used + bytes > self.capacity {
            let (_, oldest) = self.order.pop_first().expect("the cache holds what it counts");
            self.drop_entry(&oldest);
        }
        let siblings = children_key(&previous, &keys.kind);
        self.children.entry(siblings).or_default().push(key);
        self.clock += 1;
        self.order.insert(self.clock, key);
        self.entries.insert(key, Entry { layers, content, siblings, bytes, used_at: self.clock });
        self.used += bytes;
        true
    }

    /// Forgets a block (already out of `order`).
    fn drop_entry(&mut self, key: &BlockKey) {
        let gone = self.entries.remove(key).expect("ordered keys are held");
        if let Some(list) = self.children.get_mut(&gone.siblings) {
            list.retain(|k| k != key);
            if list.is_empty() {
                self.children.remove(&gone.siblings);
            }
        }
        self.used -= gone.bytes;
        self.stats.evictions += 1;
    }

    /// Marks a prompt's blocks used, its last block first: a prefix stays longer than any prompt
    /// that extends it.
    fn touch_chain(&mut self, keys: &[BlockKey]) {
        for key in keys.iter().rev() {
            if let Some(entry) = self.entries.get_mut(key) {
                self.clock += 1;
                self.order.remove(&entry.used_at);
                entry.used_at = self.clock;
                self.order.insert(self.clock, *key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::DType;

    fn ids(v: &[u32]) -> Vec<u8> {
        v.iter().flat_map(|i| i.to_le_bytes()).collect()
    }

    #[test]
    fn a_key_stands_for_its_whole_prefix() {
        let a = block_keys(b"ids", &ids(&[1, 2, 3, 4, 5, 6, 7]), 4, 2);
        let b = block_keys(b"ids", &ids(&[1, 2, 3, 4, 9, 9, 7]), 4, 2);
        let c = block_keys(b"ids", &ids(&[0, 2, 3, 4, 5, 6]), 4, 2);
        assert_eq!(a.len(), 3, "whole blocks only");
        assert_eq!(a[..2], b[..2]);
        assert_ne!(a[2], b[2]);
        assert!(a.iter().zip(&c).all(|(x, y)| x != y), "a different first block changes every key after it");
        assert_ne!(block_keys(b"ids", &ids(&[1, 2]), 4, 2), block_keys(b"emb", &ids(&[1, 2]), 4, 2));
    }

    #[test]
    fn chunks_cover_the_prompt_in_pieces_of_at_most_chunk() {
        for prompt_len in 1..200 {
            for chunk in [0, 1, 4, 9, 16, 33, 64] {
                let mut start = 0;
                while start < prompt_len {
                    let len = chunk_len(start, prompt_len, chunk);
                    assert!(len >= 1 && len <= chunk.max(1), "{prompt_len} by {chunk}: {len} at {start}");
                    assert!(len == chunk.max(1) || start + len == prompt_len, "only the last chunk is short");
                    start += len;
                }
                assert_eq!(start, prompt_len);
            }
        }
    }

    /// A cache of `positions` positions whose layer-`l` key at position `p` is `p + 100 l`.
    fn cache(positions: usize, layers: usize) -> KvCache {
        let device = Device::flex();
        let layer = |l: usize| {
            // Position, head and layer in each value (exact in bf16).
            let v: Vec<f32> = (0..2 * positions * 3).map(|i| ((i / 3) % positions + 32 * (i / (3 * positions)) + 64 * l) as f32).collect();
            let t = Tensor::<4>::from_data(TensorData::new(v, [1, 2, positions, 3]), &device).cast(DType::BF16);
            (t.clone(), t)
        };
        KvCache::from_positions((0..layers).map(layer).collect(), positions)
    }

    /// The bytes of a block of `n` positions: keys and values (bf16, 2 heads of 3) and the ids.
    fn block_bytes(n: usize, layers: usize) -> usize {
        layers * 2 * (2 * n * 3 * 2) + 4 * n
    }

    fn prompt(v: impl IntoIterator<Item = u32>) -> PromptKeys {
        ids_keys(&v.into_iter().collect::<Vec<_>>(), 4)
    }

    /// Layer `l`'s keys of positions `0..n` of `cache`, as f32.
    fn keys_of(cache: &KvCache, l: usize, n: usize) -> Vec<f32> {
        let (k, _) = cache.positions(0, n).unwrap().swap_remove(l);
        k.cast(DType::F32).into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn restores_what_it_stored_in_the_cache_dtype() {
        let mut pc = PrefixCache::new(4, 1 << 20);
        let keys = prompt(0..22);
        assert_eq!(pc.lookup(&keys, 22), Hit::default());
        pc.store(&keys, &cache(22, 2));
        // 5 whole blocks and the last 2 positions.
        assert_eq!(pc.blocks(), 6);
        assert_eq!(pc.bytes(), 5 * block_bytes(4, 2) + block_bytes(2, 2));
        // The same 22 positions again: all but the last (which is prefilled).
        let hit = pc.lookup(&keys, 22);
        assert_eq!((hit.blocks, hit.positions(4)), (5, 21));
        // 20 positions: 4 blocks and 3 positions of the fifth, so that the last is prefilled.
        let twenty = prompt(0..20);
        assert_eq!(pc.lookup(&twenty, 20), Hit { blocks: 4, partial: Some((keys.blocks[4], 3)) });
        let restored = pc.restore(&keys, &Hit { blocks: 3, partial: None }, 12, &Device::flex());
        assert_eq!(restored.len(), 12);
        let original = cache(22, 2);
        for (l, ((rk, rv), (ok, _))) in restored.positions(0, 12).unwrap().into_iter().zip(original.positions(0, 12).unwrap()).enumerate() {
            assert_eq!(rk.dtype(), DType::BF16);
            let f = |t: Tensor<4>| t.cast(DType::F32).into_data().try_to_vec::<f32>().unwrap();
            assert_eq!(f(rk), f(ok), "layer {l} keys");
            assert_eq!(f(rv).len(), 2 * 12 * 3);
        }
        assert_eq!(pc.stats().hit_tokens, 12);
    }

    /// Past the last whole block that matches, the positions a held block shares with the prompt:
    /// those of the block that shares the most, of the same kind, leaving one position to prefill.
    #[test]
    fn restores_the_positions_a_held_block_shares() {
        let mut pc = PrefixCache::new(4, 1 << 20);
        let a = prompt(0..22);
        pc.store(&a, &cache(22, 2));
        // Blocks [0..4) [4..8) [8..12) match; the fourth block of b starts as a's (12, 13).
        let b = prompt((0..14).chain([99, 98, 97, 96, 95, 94]));
        let hit = pc.lookup(&b, 20);
        assert_eq!(hit, Hit { blocks: 3, partial: Some((a.blocks[3], 2)) });
        // Restored into buffers with room for 20 positions: the rest appends in place.
        let mut restored = pc.restore(&b, &hit, 20, &Device::flex());
        assert_eq!((restored.len(), restored.capacity()), (14, 20));
        for l in 0..2 {
            assert_eq!(keys_of(&restored, l, 14), keys_of(&cache(22, 2), l, 14), "layer {l}");
        }
        assert_eq!(pc.stats().hit_tokens, 14);
        let full = cache(20, 2);
        restored.plan_step(1, 6, None);
        for (layer, (k, v)) in restored.layers_mut().iter_mut().zip(full.positions(14, 6).unwrap()) {
            crate::LayerCache::append(layer, k, v);
        }
        assert_eq!(restored.capacity(), 20, "no growth");
        for l in 0..2 {
            assert_eq!(keys_of(&restored, l, 20), keys_of(&full, l, 20), "layer {l} after appends");
        }
        // Another held block after the same three shares more with c: that one is taken.
        pc.store(&b, &cache(20, 2));
        let c = prompt((0..14).chain([99, 98, 97, 5, 5]));
        assert_eq!(pc.lookup(&c, 19), Hit { blocks: 4, partial: Some((b.blocks[4], 1)) });
        let d = prompt((0..14).chain([99, 98, 7, 7]));
        assert_eq!(pc.lookup(&d, 18), Hit { blocks: 4, partial: None });
        // After the same three blocks a's fourth shares 2 positions with e, b's 3.
        let e = prompt((0..14).chain([99, 1, 1, 1]));
        assert_eq!(pc.lookup(&e, 18), Hit { blocks: 3, partial: Some((b.blocks[3], 3)) });
        // At most what leaves the last position to prefill: a's first 15 ids restore 14 (a's
        // fourth block or b's, which both start with 12, 13).
        let hit = pc.lookup(&prompt(0..15), 15);
        assert_eq!((hit.blocks, hit.positions(4)), (3, 14));
        assert_eq!(pc.lookup(&prompt(0..13), 13), Hit { blocks: 3, partial: None });
        // Nothing shared past the blocks: no partial block; the first block: from the root.
        assert_eq!(pc.lookup(&prompt((0..12).chain([50, 51, 52])), 15), Hit { blocks: 3, partial: None });
        assert_eq!(pc.lookup(&prompt([0, 1, 60, 61, 62]), 5), Hit { blocks: 0, partial: Some((a.blocks[0], 2)) });
        // Another kind with the same bytes shares nothing.
        let bytes: Vec<u8> = (0..22u32).flat_map(|i| i.to_le_bytes()).collect();
        assert_eq!(pc.lookup(&PromptKeys::new(b"embeds F32", bytes, 4, 4), 22), Hit::default());
    }

    /// A prompt's last positions after its whole blocks are kept too (once it is all in the
    /// cache): a longer prompt that goes on from it restores every position of it.
    #[test]
    fn a_prompt_that_goes_on_restores_all_of_the_earlier_one() {
        let mut pc = PrefixCache::new(4, 1 << 20);
        let a = prompt(0..10);
        pc.store(&a, &cache(8, 2));
        assert_eq!(pc.blocks(), 2, "not all of the prompt in the cache: its whole blocks only");
        pc.store(&a, &cache(10, 2));
        assert_eq!(pc.blocks(), 3);
        let b = prompt(0..13);
        let hit = pc.lookup(&b, 13);
        assert_eq!((hit.blocks, hit.positions(4)), (2, 10));
        let restored = pc.restore(&b, &hit, 0, &Device::flex());
        assert_eq!(restored.len(), 10);
        assert_eq!(keys_of(&restored, 1, 10), keys_of(&cache(10, 2), 1, 10));
        // Stored again, nothing changes; b's own blocks join.
        pc.store(&a, &cache(10, 2));
        pc.store(&b, &cache(13, 2));
        assert_eq!(pc.blocks(), 3 + 1 + 1, "b's third block and its last position");
        assert_eq!(pc.lookup(&prompt(0..14), 14).positions(4), 13);
    }

    #[test]
    fn drops_the_least_recently_used_blocks_and_keeps_prefixes_longest() {
        let per_block = block_bytes(4, 1);
        let mut pc = PrefixCache::new(4, 4 * per_block);
        let a = prompt(0..12);
        let b = prompt(100..112);
        pc.store(&a, &cache(12, 1));
        assert_eq!(pc.blocks(), 3);
        pc.store(&b, &cache(12, 1));
        assert_eq!((pc.blocks(), pc.stats().evictions), (4, 2));
        // a's last two blocks went first: its first block was touched after them.
        assert!(pc.entries.contains_key(&a.blocks[0]) && !pc.entries.contains_key(&a.blocks[1]) && !pc.entries.contains_key(&a.blocks[2]));
        assert!(b.blocks.iter().all(|k| pc.entries.contains_key(k)));
        assert!(pc.bytes() <= 4 * per_block);
        // Dropped blocks are no partial candidates either.
        assert_eq!(pc.lookup(&prompt((0..6).chain([7, 7, 7])), 9), Hit { blocks: 1, partial: None });
        assert_eq!(pc.children.values().map(Vec::len).sum::<usize>(), pc.blocks());
        // A prompt extending an old prefix: making room for its new block drops another
        // prompt's block, not the prefix it extends.
        let mut pc = PrefixCache::new(4, 3 * per_block);
        let old = prompt(0..4);
        let other = prompt(100..108);
        let extended = prompt((0..4).chain(200..204));
        pc.store(&old, &cache(4, 1));
        pc.store(&other, &cache(8, 1));
        pc.store(&extended, &cache(8, 1));
        let held = |k: &BlockKey| pc.entries.contains_key(k);
        assert!(extended.blocks.iter().all(held), "both blocks of the extended prompt held");
        assert!(held(&other.blocks[0]) && !held(&other.blocks[1]), "the other prompt's first block kept, its second dropped");
        let mut none = PrefixCache::new(4, 0);
        none.store(&a, &cache(12, 1));
        assert_eq!(none.blocks(), 0);
        assert_eq!(none.lookup(&a, 100), Hit::default());
    }
}
