//! Device specs, `cpu | wgpu[:N] | cuda[:N]`, resolved against the backends this build has (the
//! `wgpu` and `cuda` features): the CLI's `--device` and the Python package's `device=`. A
//! backend the build lacks, a machine without an NVIDIA driver, or an index past the GPUs there
//! are is an error that says so, before Burn would panic at its first kernel launch.

use burn::tensor::Device;

/// `cpu` (or `flex`), `wgpu[:N]`, `cuda[:N]`.
pub fn parse(spec: &str) -> Result<Device, String> {
    let (kind, index) = match spec.split_once(':') {
        Some((k, i)) => {
            let i: usize = i.parse().map_err(|_| format!("device index in `{spec}` must be a number"))?;
            (k, Some(i))
        }
        None => (spec, None),
    };
    match kind {
        "cpu" | "flex" => Ok(Device::flex()),
        "wgpu" => wgpu(index),
        "cuda" => cuda(index),
        other => Err(format!("unknown device `{other}` (expected cpu, wgpu[:N] or cuda[:N])")),
    }
}

/// One device, or several CUDA devices (`cuda:0,cuda:1`) for data-parallel training. Burn 0.22
/// all-reduces gradients with NCCL, its only implementation of collective operations, so other
/// backends train on one device.
pub fn parse_training_devices(spec: &str) -> Result<Vec<Device>, String> {
    let specs: Vec<&str> = spec.split(',').map(str::trim).collect();
    if specs.len() > 1 {
        if let Some(other) = specs.iter().find(|s| !s.starts_with("cuda")) {
            return Err(format!(
                "--device {spec}: data-parallel training needs collective operations, which Burn 0.22 \
                 implements for CUDA only (NCCL); `{other}` can train on its own, or list CUDA devices \
                 (cuda:0,cuda:1)"
            ));
        }
        let mut seen = specs.clone();
        seen.sort_unstable();
        seen.dedup();
        if seen.len() != specs.len() {
            return Err(format!("--device {spec}: a device is listed twice"));
        }
    }
    specs.iter().map(|s| parse(s)).collect()
}

#[cfg(feature = "wgpu")]
fn wgpu(index: Option<usize>) -> Result<Device, String> {
    use burn::tensor::DeviceKind;
    Ok(Device::wgpu(match index {
        Some(i) => DeviceKind::DiscreteGpu(i),
        None => DeviceKind::DefaultDevice,
    }))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu(_: Option<usize>) -> Result<Device, String> {
    Err("this build is without the wgpu backend; rebuild with the `wgpu` feature (`cargo build --release --features wgpu`; \
         the Python package: `MATURIN_PEP517_ARGS=\"--features wgpu\" pip install ./crates/biomedgpt-py`)"
        .into())
}

#[cfg(feature = "cuda")]
fn cuda(index: Option<usize>) -> Result<Device, String> {
    let index = index.unwrap_or(0);
    cuda_present(index)?;
    Ok(Device::cuda(index))
}

/// Burn opens the CUDA driver lazily and panics deep inside the first kernel launch when there
/// is none; ask the driver (the same cudarc that cubecl-cuda loads at run time) before that.
#[cfg(feature = "cuda")]
fn cuda_present(index: usize) -> Result<(), String> {
    use cudarc::driver::{result, sys};
    // SAFETY: only tries to open libcuda.so with the dynamic loader.
    if !unsafe { sys::is_culib_present() } {
        return Err(format!(
            "--device cuda:{index}: no NVIDIA driver on this machine (libcuda.so could not be loaded); \
             run with --device cpu, or on a machine with an NVIDIA GPU and its driver"
        ));
    }
    result::init().map_err(|e| format!("--device cuda:{index}: the NVIDIA driver did not start ({e}); check `nvidia-smi`"))?;
    let count = result::device::get_count().map_err(|e| format!("--device cuda:{index}: cannot count the CUDA GPUs ({e})"))?;
    match usize::try_from(count).unwrap_or(0) {
        0 => Err(format!("--device cuda:{index}: the NVIDIA driver is loaded but sees no GPU; run with --device cpu")),
        n if index >= n => Err(format!("--device cuda:{index}: this machine has {n} CUDA GPU(s): cuda:0 to cuda:{}", n - 1)),
        _ => Ok(()),
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda(_: Option<usize>) -> Result<Device, String> {
    Err("this build is without the CUDA backend; rebuild with the `cuda` feature (`cargo build --release --features cuda`, \
         README: CUDA; the Python package: `MATURIN_PEP517_ARGS=\"--features cuda\" pip install ./crates/biomedgpt-py`)"
        .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_read_or_refused_by_name() {
        assert!(parse("cpu").is_ok() && parse("flex").is_ok());
        assert!(parse("tpu").unwrap_err().contains("unknown device `tpu`"));
        assert!(parse("cuda:x").unwrap_err().contains("must be a number"));
        assert!(parse_training_devices("cpu,wgpu").unwrap_err().contains("CUDA only"));
        assert!(parse_training_devices("cuda:0,cuda:0").unwrap_err().contains("listed twice"));
        #[cfg(not(feature = "cuda"))]
        assert!(parse("cuda:0").unwrap_err().contains("without the CUDA backend"));
    }
}
