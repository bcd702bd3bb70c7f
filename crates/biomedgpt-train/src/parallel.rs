//! Data-parallel training over several devices with Burn's distributed API: one model replica
//! per device (forked from the loaded model, so parameter ids agree), trainable parameters marked
//! distributed, and Burn's autodiff all-reducing (mean) their gradients during `backward`, as
//! burn-train's DDP strategy does. Each device computes the loss of a shard of the same global
//! batch that a single-device run would take, weighted so that the mean over devices is the
//! single-device loss (mean over all answer tokens of the batch); every replica then takes the
//! same optimizer step.
//!
//! Burn 0.22 implements the collective operation for CUDA (NCCL) only; the CPU backend has none.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use biomedgpt_model::BioMedGpt;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor};

use crate::{EncodedExample, TrainError, Trainable, batch_loss};

/// One device's part of a batch: example indices and the factor its loss is multiplied by.
#[derive(Clone, Debug, PartialEq)]
pub struct Shard {
    pub examples: Vec<usize>,
    pub weight: f64,
}

/// Splits `batch` (example indices) into `devices` contiguous shards with about equal answer
/// token counts (`answer_tokens[i]`). A shard's weight is `devices x its answer tokens / the
/// batch's`, so the mean of the weighted shard losses (what the all-reduce computes for the
/// gradients) is the loss over the whole batch. With fewer examples than devices, the devices
/// left over get the batch's first example with weight 0: they still join every all-reduce.
pub fn shard_batch(batch: &[usize], answer_tokens: &[usize], devices: usize) -> Vec<Shard> {
    assert!(devices >= 1 && !batch.is_empty(), "shard_batch: at least one device and one example");
    let total: usize = batch.iter().map(|&i| answer_tokens[i]).sum();
    let mut shards = Vec::with_capacity(devices);
    let mut start = 0;
    let mut taken = 0usize;
    for d in 0..devices {
        let left_devices = devices - d;
        let left_examples = batch.len() - start;
        if left_examples == 0 {
            shards.push(Shard { examples: vec![batch[0]], weight: 0.0 });
            continue;
        }
        // Extend while below this device's share of the tokens, leaving an example for each
        // later device where possible.
        let target = (total - taken) as f64 / left_devices as f64;
        let mut end = start + 1;
        let mut tokens = answer_tokens[batch[start]];
        while end < batch.len() && batch.len() - end >= left_devices && (tokens as f64) < target {
            let next = answer_tokens[batch[end]];
            // Stop where taking the next example overshoots more than leaving it undershoots.
            if (tokens + next) as f64 - target > target - tokens as f64 {
                break;
            }
            tokens += next;
            end += 1;
        }
        if d == devices - 1 {
            end = batch.len();
            tokens = batch[start..].iter().map(|&i| answer_tokens[i]).sum();
        }
        shards.push(Shard { examples: batch[start..end].to_vec(), weight: (devices * tokens) as f64 / total.max(1) as f64 });
        taken += tokens;
        start = end;
    }
    shards
}

struct MarkDistributed;

impl ModuleMapper for MarkDistributed {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if !param.val().is_require_grad() {
            return param;
        }
        let (id, tensor, mapper) = param.consume();
        Param::from_mapped_value(id, tensor.set_distributed(id), mapper)
    }
}

/// Marks the module's trainable parameters as distributed: their gradients are all-reduced
/// across the devices of the [`burn::tensor::distributed::DistributedContext`] during backward.
pub fn mark_distributed<M: Module>(module: M) -> M {
    module.map(&mut MarkDistributed)
}

struct TrainableSum {
    total: Option<Tensor<1>>,
}

impl ModuleVisitor for TrainableSum {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        if !value.is_require_grad() {
            return;
        }
        let sum = value.sum().reshape([1]).cast(burn::tensor::DType::F32);
        self.total = Some(match self.total.take() {
            Some(total) => total + sum,
            None => sum,
        });
    }
}

/// `0 x` the sum of every trainable parameter: added to a replica's loss so that each trainable
/// parameter is in every replica's graph, whatever its shard holds (a shard without proteins
/// does not use `proj_prot`). The all-reduce of a parameter then always spans all devices and
/// divides by their number, and no device waits for a gradient another never computes.
pub fn zero_use_of_trainables<M: Module>(module: &M) -> Option<Tensor<1>> {
    let mut visitor = TrainableSum { total: None };
    module.visit(&mut visitor);
    visitor.total.map(|t| t.mul_scalar(0.0))
}

/// A model and its optimizer on one device, with the gradients of the micro-batches of the
/// current step. A single-device run has one; a data-parallel run one per device.
pub struct Replica {
    pub model: BioMedGpt,
    pub optimizer: ModuleOptimizer,
    accumulator: GradientsAccumulator<Trainable>,
    distributed: bool,
}

impl Replica {
    /// A single-device replica (nothing is all-reduced).
    pub fn single(model: BioMedGpt, optimizer: ModuleOptimizer) -> Replica {
        Replica { model, optimizer, accumulator: GradientsAccumulator::new(), distributed: false }
    }

    /// A data-parallel replica: its trainable parameters marked distributed. Call within a
    /// [`burn::tensor::distributed::DistributedContext`] spanning every replica's device.
    pub fn distributed(mut model: BioMedGpt, optimizer: ModuleOptimizer) -> Result<Replica, TrainError> {
        mark_distributed(Trainable::take_from(&mut model)).put_into(&mut model)?;
        Ok(Replica { model, optimizer, accumulator: GradientsAccumulator::new(), distributed: true })
    }

    /// Backward through one micro-batch shard's loss x `weight` / `grad_accum` (all-reduced
    /// across the replicas when distributed) and keeps the gradients for [`Self::step`]. Returns
    /// the weighted loss.
    pub fn micro_batch(&mut self, examples: &[EncodedExample], weight: f64, grad_accum: usize) -> Result<f64, TrainError> {
        let mut loss = batch_loss(&self.model, &self.model.adapters, examples)?;
        if weight != 1.0 {
            loss = loss.mul_scalar(weight);
        }
        let mut loss = loss.div_scalar(grad_accum as f64);
        let value = loss.clone().into_scalar::<f32>() as f64;
        if self.distributed {
            if let Some(zero) = zero_use_of_trainables(&Trainable::of(&self.model)) {
                loss = loss + zero;
            }
        }
        let gradients = loss.backward();
        let trainable = Trainable::of(&self.model);
        let grads = GradientsParams::from_grads(gradients, &trainable);
        self.accumulator.accumulate(&trainable, grads);
        Ok(value)
    }

    /// The optimizer step with the gradients accumulated since the last one. Frozen parameters
    /// have no gradients and stay as they are.
    pub fn step(&mut self, lr: f64) -> Result<(), TrainError> {
        let grads = std::mem::replace(&mut self.accumulator, GradientsAccumulator::new()).grads();
        let trainable = self.optimizer.step(lr, Trainable::take_from(&mut self.model), grads);
        trainable.put_into(&mut self.model)
    }
}

enum Job {
    MicroBatch { examples: Vec<EncodedExample>, weight: f64, grad_accum: usize },
    Step { lr: f64 },
}

/// A replica on a device other than the first, run by its own thread: each job of the main
/// loop is answered once done (the main thread runs the first replica at the same time, as the
/// all-reduce inside backward needs every replica).
pub struct Worker {
    jobs: Sender<Job>,
    done: Receiver<Result<f64, String>>,
    thread: JoinHandle<()>,
}

impl Worker {
    /// Starts the replica `replica` (already on `device`).
    pub fn start(mut replica: Replica, device: Device) -> Worker {
        let (jobs, inbox) = channel::<Job>();
        let (outbox, done) = channel();
        let thread = std::thread::spawn(move || {
            for job in inbox {
                let result = match job {
                    Job::MicroBatch { examples, weight, grad_accum } => {
                        let examples: Vec<EncodedExample> = examples.iter().map(|e| e.to_device(&device)).collect();
                        replica.micro_batch(&examples, weight, grad_accum)
                    }
                    Job::Step { lr } => replica.step(lr).map(|_| 0.0),
                };
                if outbox.send(result.map_err(|e| e.to_string())).is_err() {
                    break;
                }
            }
        });
        Worker { jobs, done, thread }
    }

    /// Hands the replica its shard of a micro-batch (answered by [`Self::wait`]).
    pub fn send_micro_batch(&self, examples: Vec<EncodedExample>, weight: f64, grad_accum: usize) -> Result<(), TrainError> {
        self.send(Job::MicroBatch { examples, weight, grad_accum })
    }

    pub fn send_step(&self, lr: f64) -> Result<(), TrainError> {
        self.send(Job::Step { lr })
    }

    fn send(&self, job: Job) -> Result<(), TrainError> {
        self.jobs.send(job).map_err(|_| TrainError::Input("a data-parallel worker stopped".into()))
    }

    /// The result of the last job sent.
    pub fn wait(&self) -> Result<f64, TrainError> {
        match self.done.recv() {
            Ok(result) => result.map_err(|e| TrainError::Input(format!("data-parallel worker: {e}"))),
            Err(_) => Err(TrainError::Input("a data-parallel worker stopped (panicked?)".into())),
        }
    }

    /// Ends the thread after its last job.
    pub fn stop(self) {
        drop(self.jobs);
        let _ = self.thread.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(batch: &[usize], tokens: &[usize], devices: usize) -> Vec<Shard> {
        let shards = shard_batch(batch, tokens, devices);
        assert_eq!(shards.len(), devices);
        let real: Vec<usize> = shards.iter().filter(|s| s.weight > 0.0).flat_map(|s| s.examples.clone()).collect();
        assert_eq!(real, batch, "every example exactly once, in order");
        let mean: f64 = shards.iter().map(|s| s.weight).sum::<f64>() / devices as f64;
        assert!((mean - 1.0).abs() < 1e-12, "weights average to 1: {shards:?}");
        assert!(shards.iter().all(|s| !s.examples.is_empty()));
        shards
    }

    #[test]
    fn one_device_takes_the_whole_batch_at_weight_one() {
        assert_eq!(check(&[3, 1, 2], &[5, 6, 7, 8], 1), vec![Shard { examples: vec![3, 1, 2], weight: 1.0 }]);
    }

    #[test]
    fn shards_balance_answer_tokens() {
        let tokens = [10, 10, 10, 10, 40, 1, 1, 1];
        let shards = check(&[0, 1, 2, 3, 4, 5, 6, 7], &tokens, 2);
        assert_eq!(shards[0].examples, vec![0, 1, 2, 3]);
        assert_eq!(shards[1].examples, vec![4, 5, 6, 7]);
        assert!((shards[0].weight - 2.0 * 40.0 / 83.0).abs() < 1e-12);
        check(&[0, 1, 2, 3, 4, 5, 6, 7], &tokens, 3);
        check(&[4, 0], &tokens, 2);
        check(&[7, 6, 5, 4, 3, 2, 1, 0], &tokens, 8);
    }

    #[test]
    fn fewer_examples_than_devices_pad_with_weightless_copies() {
        let shards = check(&[2, 0], &[3, 4, 5], 4);
        assert_eq!(shards.iter().filter(|s| s.weight == 0.0).count(), 2);
        assert!(shards[2..].iter().all(|s| s.examples == vec![2]));
    }
}
