//! Learning-rate schedule and batching.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// Linear warmup to `peak` over `warmup` steps, then cosine decay to 0 at `total` steps. `step`
/// counts from 0. As transformers' `get_cosine_schedule_with_warmup`, except that the first step
/// already gets `peak / warmup` (transformers spends it at learning rate 0).
pub fn warmup_cosine(step: usize, peak: f64, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1);
    let progress = ((step - warmup) as f64 / span as f64).min(1.0);
    peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// The order of the training examples in `epoch`: a shuffle seeded by (seed, epoch), so a
/// resumed run sees the same order.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(epoch as u64));
    order.shuffle(&mut rng);
    order
}

/// Takes examples from `order[cursor..]` while the padded batch (examples x longest) stays within
/// `max_tokens` (always at least one example) and at most `max_examples`. Returns the indices.
pub fn next_batch(order: &[usize], cursor: usize, lengths: &[usize], max_tokens: usize, max_examples: usize) -> Vec<usize> {
    let mut batch = Vec::new();
    let mut longest = 0;
    for &i in &order[cursor..] {
        let l = longest.max(lengths[i]);
        if !batch.is_empty() && ((batch.len() + 1) * l > max_tokens || batch.len() >= max_examples) {
            break;
        }
        longest = l;
        batch.push(i);
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_to_zero() {
        assert_eq!(warmup_cosine(0, 1.0, 4, 10), 0.25);
        assert_eq!(warmup_cosine(3, 1.0, 4, 10), 1.0);
        assert!((warmup_cosine(4, 1.0, 4, 10) - 1.0).abs() < 1e-12);
        assert!((warmup_cosine(7, 1.0, 4, 10) - 0.5).abs() < 1e-12);
        assert!((warmup_cosine(8, 1.0, 4, 10) - 0.25).abs() < 1e-12);
        assert!(warmup_cosine(10, 1.0, 4, 10).abs() < 1e-12);
        assert_eq!(warmup_cosine(0, 2.0, 0, 10), 2.0);
    }

    #[test]
    fn batches_respect_the_token_budget_and_orders_repeat() {
        let lengths = [10, 30, 20, 50, 5];
        let order = [0, 1, 2, 3, 4];
        assert_eq!(next_batch(&order, 0, &lengths, 64, 8), vec![0, 1]); // 3 x 30 > 64
        assert_eq!(next_batch(&order, 3, &lengths, 64, 8), vec![3]); // 2 x 50 > 64
        assert_eq!(next_batch(&order, 3, &lengths, 10, 8), vec![3]); // one example even if too long
        assert_eq!(next_batch(&order, 0, &lengths, 1000, 2), vec![0, 1]);
        assert_eq!(epoch_order(50, 7, 3), epoch_order(50, 7, 3));
        assert_ne!(epoch_order(50, 7, 3), epoch_order(50, 7, 4));
    }
}
