//! `--device cpu|wgpu[:N]|cuda[:N]`, resolved against the backends this binary was built with
//! (`biomedgpt_device`, shared with the Python package).

use anyhow::Result;
use burn::tensor::Device;

pub fn parse(spec: &str) -> Result<Device> {
    biomedgpt_device::parse(spec).map_err(anyhow::Error::msg)
}

/// `train --device`: one device, or several CUDA devices (`cuda:0,cuda:1`) for data-parallel
/// training.
pub fn parse_training_devices(spec: &str) -> Result<Vec<Device>> {
    biomedgpt_device::parse_training_devices(spec).map_err(anyhow::Error::msg)
}
