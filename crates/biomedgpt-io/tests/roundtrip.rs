//! Streaming safetensors writer -> mmap reader, with dtype conversion and shape checks.

use biomedgpt_io::safetensors_writer::{TensorSpec, write_streaming};
use biomedgpt_io::{Checkpoint, FloatType, LoadError, SourceDType};
use half::f16;

#[test]
fn written_tensors_read_back_in_every_dtype() {
    let scratch = tempfile::tempdir().unwrap(); // removed when dropped (issue 39, D21)
    let path = scratch.path().join(format!("biomedgpt-roundtrip-{}.safetensors", std::process::id()));
    let values: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
    let specs = vec![
        TensorSpec { name: "a.weight".into(), dtype: SourceDType::F32, shape: vec![3, 4] },
        TensorSpec { name: "b.weight".into(), dtype: SourceDType::F16, shape: vec![12] },
    ];
    write_streaming(&path, &specs, &[("format", "pt")], |i, buf| {
        for v in &values {
            match i {
                0 => buf.extend_from_slice(&v.to_le_bytes()),
                _ => buf.extend_from_slice(&f16::from_f32(*v).to_bits().to_le_bytes()),
            }
        }
        Ok(())
    })
    .unwrap();

    let ckpt = Checkpoint::open(&path).unwrap();
    assert_eq!(ckpt.len(), 2);
    let a = ckpt.load("a.weight", &[3, 4], FloatType::F32).unwrap();
    assert_eq!(a.as_slice::<f32>().unwrap(), values.as_slice());
    let b = ckpt.load("b.weight", &[12], FloatType::F32).unwrap();
    assert_eq!(b.as_slice::<f32>().unwrap(), values.as_slice());
    let a16 = ckpt.load("a.weight", &[3, 4], FloatType::F16).unwrap();
    let back: Vec<f32> = a16.as_slice::<f16>().unwrap().iter().map(|x| x.to_f32()).collect();
    assert_eq!(back, values);

    match ckpt.load("a.weight", &[4, 3], FloatType::F32) {
        Err(LoadError::ShapeMismatch { key, expected, found }) => {
            assert_eq!((key.as_str(), expected, found), ("a.weight", vec![4, 3], vec![3, 4]));
        }
        other => panic!("expected a shape error, got {other:?}"),
    }
    let missing = ckpt.load("c.weight", &[1], FloatType::F32).unwrap_err().to_string();
    assert!(missing.contains("`c.weight`"), "{missing}");
    std::fs::remove_file(path).unwrap();
}

#[test]
fn garbage_file_is_rejected_with_its_name() {
    let scratch = tempfile::tempdir().unwrap(); // removed when dropped (issue 39, D21)
    let path = scratch.path().join(format!("biomedgpt-garbage-{}.bin", std::process::id()));
    std::fs::write(&path, b"this is not a checkpoint at all").unwrap();
    let err = Checkpoint::open(&path).err().expect("garbage must not load").to_string();
    assert!(err.contains("biomedgpt-garbage"), "{err}");
    std::fs::remove_file(path).unwrap();
}
