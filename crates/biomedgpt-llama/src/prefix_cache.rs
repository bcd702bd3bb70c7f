//! Prefix caching: the keys and values of prompt blocks kept across requests, so that a prompt
//! which starts as an earlier one did (the same system prompt, a chat's earlier turns) is
//! prefilled only from where it differs. vLLM's automatic prefix caching in its simplest form:
//! a prompt is cut into blocks of [`PrefixCache::block`] positions from its start, and each whole
//! block is known by a hash of its content chained with the previous block's hash, so a key
//! stands for everything before it too. Blocks are dropped least recently used first when the
//! cache would outgrow its bytes; a block is touched after its children, so a prefix outlives
//! the longer prompts built on it.
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

/// The keys of a prompt's whole blocks. `content` holds `per_position` bytes for each position (a
/// token id, or an input embedding's values: whatever fixes the position's keys and values),
/// `kind` tells apart contents that could share bytes (ids from embeddings).
pub fn block_keys(kind: &[u8], content: &[u8], per_position: usize, block: usize) -> Vec<BlockKey> {
    assert!(per_position > 0 && block > 0 && content.len() % per_position == 0, "content of whole positions");
    let mut keys = Vec::new();
    let mut previous: BlockKey = [0; 16];
    for chunk in content.chunks_exact(per_position * block) {
        let mut h = Sha256::new();
        h.update(previous);
        h.update((kind.len() as u64).to_le_bytes());
        h.update(kind);
        h.update(chunk);
        previous.copy_from_slice(&h.finalize()[..16]);
        keys.push(previous);
    }
    keys
}

/// [`block_keys`] of a prompt's token ids.
pub fn ids_keys(ids: &[u32], block: usize) -> Vec<BlockKey> {
    let bytes: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
    block_keys(b"ids", &bytes, 4, block)
}

/// [`block_keys`] of a prompt's input embeddings `[1, T, hidden]` (a chat's, with molecules and
/// proteins spliced in), by their values in their dtype.
pub fn embeds_keys(embeds: &Tensor<3>, block: usize) -> Vec<BlockKey> {
    let [_, t, _] = embeds.dims();
    let whole = t / block * block;
    if whole == 0 {
        return Vec::new();
    }
    let data = embeds.clone().narrow(1, 0, whole).into_data();
    let kind = format!("embeds {:?}", data.dtype());
    let bytes = data.as_bytes();
    block_keys(kind.as_bytes(), bytes, bytes.len() / whole, block)
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
        PrefixCache { block, capacity: capacity_bytes, used: 0, entries: HashMap::new(), order: BTreeMap::new(), clock: 0, stats: PrefixStats::default() }
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

    /// How many leading blocks of a `prompt_len` prompt with block keys `keys` can be restored:
    /// those held, leaving at least one position to prefill (the last position's logits come
    /// from a prefill).
    pub fn usable_blocks(&self, keys: &[BlockKey], prompt_len: usize) -> usize {
        if !self.enabled() || prompt_len == 0 {
            return 0;
        }
        let most = (prompt_len - 1) / self.block;
        keys.iter().take(most).take_while(|k| self.entries.contains_key(*k)).count()
    }

    /// A one-sequence cache holding the first `blocks` blocks of `keys` (all held: see
    /// [`Self::usable_blocks`]) on `device`, counted as hits.
    pub fn restore(&mut self, keys: &[BlockKey], blocks: usize, device: &Device) -> KvCache {
        assert!(blocks > 0 && blocks <= keys.len(), "restore at least one of the prompt's blocks");
        let entries: Vec<&Entry> = keys[..blocks].iter().map(|k| self.entries.get(k).expect("usable blocks are held")).collect();
        let num_layers = entries[0].layers.len();
        let tensor = |data: &TensorData| Tensor::<4>::from_data(data.clone(), (device, data.dtype()));
        let layers = (0..num_layers)
            .map(|l| {
                let keys = entries.iter().map(|e| tensor(&e.layers[l].0)).collect::<Vec<_>>();
                let values = entries.iter().map(|e| tensor(&e.layers[l].1)).collect::<Vec<_>>();
                (Tensor::cat(keys, 2), Tensor::cat(values, 2))
            })
            .collect();
        self.touch_chain(&keys[..blocks]);
        self.stats.hit_tokens += (blocks * self.block) as u64;
        KvCache::from_positions(layers, blocks * self.block)
    }

    /// Stores the blocks of `keys` that `cache` (one sequence, the same prompt) holds in full and
    /// the cache does not, dropping the least recently used blocks to make room. A block larger
    /// than the whole capacity is not stored.
    pub fn store(&mut self, keys: &[BlockKey], cache: &KvCache) {
        if !self.enabled() {
            return;
        }
        let whole = (cache.len() / self.block).min(keys.len());
        // The prompt's blocks already held become the most recent first, so that making room
        // for its new blocks never drops their own prefix (which would leave them unreachable).
        self.touch_chain(&keys[..whole]);
        for (j, key) in keys[..whole].iter().enumerate() {
            if self.entries.contains_key(key) {
                continue;
            }
            let Some(views) = cache.positions(j * self.block, self.block) else { return };
            let layers: Vec<(TensorData, TensorData)> = views.into_iter().map(|(k, v)| (k.into_data(), v.into_data())).collect();
            let bytes = layers.iter().map(|(k, v)| k.as_bytes().len() + v.as_bytes().len()).sum();
            if bytes > self.capacity {
                return;
            }
            while self.used + bytes > self.capacity {
                let (_, oldest) = self.order.pop_first().expect("the cache holds what it counts");
                let gone = self.entries.remove(&oldest).expect("ordered keys are held");
                self.used -= gone.bytes;
                self.stats.evictions += 1;
            }
            self.clock += 1;
            self.order.insert(self.clock, *key);
            self.entries.insert(*key, Entry { layers, bytes, used_at: self.clock });
            self.used += bytes;
        }
        self.touch_chain(&keys[..whole]);
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
            let v: Vec<f32> = (0..2 * positions * 3).map(|i| ((i / 3) % positions + 100 * l) as f32).collect();
            let t = Tensor::<4>::from_data(TensorData::new(v, [1, 2, positions, 3]), &device).cast(DType::BF16);
            (t.clone(), t)
        };
        KvCache::from_positions((0..layers).map(layer).collect(), positions)
    }

    fn block_bytes(block: usize, layers: usize) -> usize {
        layers * 2 * (2 * block * 3 * 2)
    }

    #[test]
    fn restores_what_it_stored_in_the_cache_dtype() {
        let mut pc = PrefixCache::new(4, 1 << 20);
        let keys = block_keys(b"ids", &ids(&(0..22).collect::<Vec<_>>()), 4, 4);
        assert_eq!(pc.usable_blocks(&keys, 22), 0);
        pc.store(&keys, &cache(22, 2));
        assert_eq!(pc.blocks(), 5);
        assert_eq!(pc.bytes(), 5 * block_bytes(4, 2));
        // 22 positions: all 5 whole blocks (the 2 after them are prefilled).
        assert_eq!(pc.usable_blocks(&keys, 22), 5);
        // 20 positions: 4 blocks, so that the last position is prefilled.
        assert_eq!(pc.usable_blocks(&keys[..5], 20), 4);
        let restored = pc.restore(&keys, 3, &Device::flex());
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

    #[test]
    fn drops_the_least_recently_used_blocks_and_keeps_prefixes_longest() {
        let per_block = block_bytes(4, 1);
        let mut pc = PrefixCache::new(4, 4 * per_block);
        let a = block_keys(b"ids", &ids(&(0..12).collect::<Vec<_>>()), 4, 4);
        let b = block_keys(b"ids", &ids(&(100..112).collect::<Vec<_>>()), 4, 4);
        pc.store(&a, &cache(12, 1));
        assert_eq!(pc.blocks(), 3);
        pc.store(&b, &cache(12, 1));
        assert_eq!((pc.blocks(), pc.stats().evictions), (4, 2));
        // a's last two blocks went first: its first block was touched after them.
        assert!(pc.entries.contains_key(&a[0]) && !pc.entries.contains_key(&a[1]) && !pc.entries.contains_key(&a[2]));
        assert!(b.iter().all(|k| pc.entries.contains_key(k)));
        assert!(pc.bytes() <= 4 * per_block);
        // A prompt extending an old prefix: making room for its new block drops another
        // prompt's block, not the prefix it extends.
        let mut pc = PrefixCache::new(4, 3 * per_block);
        let old = block_keys(b"ids", &ids(&(0..4).collect::<Vec<_>>()), 4, 4);
        let other = block_keys(b"ids", &ids(&(100..108).collect::<Vec<_>>()), 4, 4);
        let extended = block_keys(b"ids", &ids(&(0..4).chain(200..204).collect::<Vec<_>>()), 4, 4);
        pc.store(&old, &cache(4, 1));
        pc.store(&other, &cache(8, 1));
        pc.store(&extended, &cache(8, 1));
        assert_eq!(pc.usable_blocks(&extended, 100), 2, "both blocks of the extended prompt held");
        assert_eq!(pc.usable_blocks(&other, 100), 1, "the other prompt's newer block kept, its older one dropped");
        let mut none = PrefixCache::new(4, 0);
        none.store(&a, &cache(12, 1));
        assert_eq!(none.blocks(), 0);
        assert_eq!(none.usable_blocks(&a, 100), 0);
    }
}
