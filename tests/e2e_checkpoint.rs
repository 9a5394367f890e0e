//! Checkpoints round-trip, refuse what is not theirs, and resume bit-exactly.

pub mod support;

use alexnet::data::Augment;
use alexnet::device::cpu::CpuDevice;
use alexnet::engine::Network;
use alexnet::model::init::init_params;
use alexnet::model::{NetSpec, Plan};
use alexnet::train::checkpoint::{self, TrainState};
use support::net::{batch, flatten, tiny_spec};

#[test]
fn resuming_from_a_checkpoint_continues_bit_exactly() {
    let plan = Plan::new(&tiny_spec(false, false)).unwrap();
    let (images, labels) = batch(&plan, 4, 8);
    let fresh =
        || Network::new(&plan, vec![CpuDevice, CpuDevice], &init_params(&plan, 2), 5).unwrap();

    let mut straight = fresh();
    for step in 0..4 {
        straight.train_step(&images, &labels, 0.05, step).unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/checkpoint.safetensors");
    let mut first_half = fresh();
    for step in 0..2 {
        first_half.train_step(&images, &labels, 0.05, step).unwrap();
    }
    let state = TrainState {
        step: 2,
        lr: 0.05,
        seed: 5,
        ..TrainState::default()
    };
    checkpoint::save(
        &path,
        &plan,
        &state,
        &first_half.params().unwrap(),
        &first_half.velocities().unwrap(),
        None,
    )
    .unwrap();
    drop(first_half);

    let ck = checkpoint::load(&path).unwrap();
    ck.check_model(&plan).unwrap();
    assert_eq!(ck.state, state);
    let mut resumed =
        Network::new(&plan, vec![CpuDevice, CpuDevice], &ck.params, ck.state.seed).unwrap();
    resumed.set_velocities(&ck.momentum).unwrap();
    for step in 2..4 {
        resumed.train_step(&images, &labels, 0.05, step).unwrap();
    }
    assert_eq!(
        flatten(&resumed.params().unwrap()),
        flatten(&straight.params().unwrap())
    );
    assert_eq!(
        flatten(&resumed.velocities().unwrap()),
        flatten(&straight.velocities().unwrap())
    );
}

#[test]
fn checkpoints_of_other_models_and_other_files_are_refused() {
    let plan = Plan::new(&tiny_spec(false, false)).unwrap();
    let other = Plan::new(&tiny_spec(true, false)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.safetensors");
    let p = init_params(&other, 1);
    checkpoint::save(&path, &other, &TrainState::default(), &p, &p, None).unwrap();
    let err = checkpoint::load(&path)
        .unwrap()
        .check_model(&plan)
        .unwrap_err()
        .to_string();
    assert!(err.contains("fc5"), "{err}");

    // The same layers trained another way (the released code's augmentation) are refused too,
    // and the error says what differs.
    let mut net145_spec = tiny_spec(false, false);
    net145_spec.augment = Augment::Net145;
    let same_layers = Plan::new(&net145_spec).unwrap();
    let p = init_params(&same_layers, 1);
    let path = dir.path().join("net145.safetensors");
    checkpoint::save(&path, &same_layers, &TrainState::default(), &p, &p, None).unwrap();
    let err = checkpoint::load(&path)
        .unwrap()
        .check_model(&plan)
        .unwrap_err()
        .to_string();
    assert!(err.contains("augmentation Net145 vs Paper"), "{err}");

    // A renamed copy is refused too, but not as trained differently: only the name differs.
    let mut renamed_spec = tiny_spec(false, false);
    renamed_spec.name = "renamed".into();
    let renamed = Plan::new(&renamed_spec).unwrap();
    let path = dir.path().join("renamed.safetensors");
    checkpoint::save(&path, &renamed, &TrainState::default(), &p, &p, None).unwrap();
    let err = checkpoint::load(&path)
        .unwrap()
        .check_model(&plan)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"renamed\"") && !err.contains("trained differently"),
        "{err}"
    );

    // A spec written before `augment` existed reads as the paper's augmentation.
    let mut old = serde_json::to_value(&plan.spec).unwrap();
    old.as_object_mut().unwrap().remove("augment").unwrap();
    let read: NetSpec = serde_json::from_value(old).unwrap();
    assert_eq!(read, plan.spec);

    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"definitely not a checkpoint").unwrap();
    let err = format!("{:#}", checkpoint::load(&junk).err().unwrap());
    assert!(err.contains("not a safetensors file"), "{err}");

    let missing = dir.path().join("missing.safetensors");
    let err = format!("{:#}", checkpoint::load(&missing).err().unwrap());
    assert!(err.contains("missing.safetensors: cannot open it"), "{err}");

    // A truncated checkpoint (a crash mid-copy elsewhere) is refused, not half-loaded.
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert!(checkpoint::load(&cut).is_err());
}

/// A safetensors file's header (its JSON) and the byte where tensor data starts.
fn header(bytes: &[u8]) -> (serde_json::Value, usize) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (serde_json::from_slice(&bytes[8..8 + n]).unwrap(), 8 + n)
}

/// The same tensor data under another header.
fn with_header(bytes: &[u8], header_json: &serde_json::Value) -> Vec<u8> {
    let (_, data_start) = header(bytes);
    let mut h = serde_json::to_vec(header_json).unwrap();
    h.resize(h.len().div_ceil(8) * 8, b' ');
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&bytes[data_start..]);
    out
}

#[test]
fn a_damaged_checkpoint_is_refused_naming_the_file_and_the_tensor() {
    let plan = Plan::new(&tiny_spec(false, false)).unwrap();
    let p = init_params(&plan, 3);
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.safetensors");
    checkpoint::save(&good, &plan, &TrainState::default(), &p, &p, None).unwrap();
    let ck = checkpoint::load(&good).unwrap();
    assert!(ck.checksummed);
    let bytes = std::fs::read(&good).unwrap();
    let (meta, data_start) = header(&bytes);
    let conv1 = data_start + meta["conv1.0.weight"]["data_offsets"][0].as_u64().unwrap() as usize;
    let load_err = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let e = format!("{:#}", checkpoint::load(&path).err().expect("refused"));
        assert!(e.contains(name), "the error names the file: {e}");
        e
    };

    // A few hundred random-looking bytes inside a tensor: its checksum no longer matches.
    let mut noisy = bytes.clone();
    for (i, b) in noisy[conv1 + 40..conv1 + 440].iter_mut().enumerate() {
        *b = (i * 151 % 253) as u8;
    }
    let e = load_err("noisy.safetensors", &noisy);
    assert!(
        e.contains("tensor conv1.0.weight does not match its checksum"),
        "{e}"
    );

    // NaN weights in a file without checksums (as older versions wrote): refused as non-finite.
    let mut nan = bytes.clone();
    nan[conv1 + 8..conv1 + 12].copy_from_slice(&f32::NAN.to_le_bytes());
    let mut unsummed = meta.clone();
    unsummed["__metadata__"]
        .as_object_mut()
        .unwrap()
        .remove("checksums");
    let e = load_err("nan.safetensors", &with_header(&nan, &unsummed));
    assert!(
        e.contains("tensor conv1.0.weight holds 1 non-finite values") && e.contains("element 2"),
        "{e}"
    );
    // Without the NaN, the unsummed file loads (and says it was not checksummed).
    let path = dir.path().join("old.safetensors");
    std::fs::write(&path, with_header(&bytes, &unsummed)).unwrap();
    assert!(!checkpoint::load(&path).unwrap().checksummed);

    // A renamed metadata key: the error names the file and what is missing.
    let mut renamed = meta.clone();
    let state = renamed["__metadata__"]["state"]
        .as_str()
        .unwrap()
        .replace("\"step\"", "\"stepp\"");
    renamed["__metadata__"]["state"] = state.into();
    let e = load_err("renamed.safetensors", &with_header(&bytes, &renamed));
    assert!(
        e.contains("training state") && e.contains("missing field `step`"),
        "{e}"
    );
}

/// The statistics kept in a checkpoint come back exactly; a checkpoint saved without them (as
/// before they were kept) has none, and a damaged mean image is refused by its checksum.
#[test]
fn statistics_kept_in_a_checkpoint_come_back_and_are_checked() {
    let plan = Plan::new(&tiny_spec(false, false)).unwrap();
    let p = init_params(&plan, 1);
    let stats = alexnet::data::Stats {
        base: 4,
        mean: (0..48).map(|i| i as f32 * 1.5).collect(),
        covariance: [[3.0, 0.5, 0.25], [0.5, 2.0, 0.125], [0.25, 0.125, 1.0]],
        eigenvalues: [3.3, 1.9, 0.8],
        eigenvectors: [[0.9, 0.3, 0.1], [-0.3, 0.9, 0.2], [0.1, -0.2, 0.97]],
        images: 10,
        samples: 11,
        classes: vec!["a".into(), "b".into()],
    };
    let dir = tempfile::tempdir().unwrap();
    let (with, without) = (
        dir.path().join("with.safetensors"),
        dir.path().join("without.safetensors"),
    );
    checkpoint::save_with_stats(
        &with,
        &plan,
        &TrainState::default(),
        &p,
        &p,
        None,
        Some(&stats),
    )
    .unwrap();
    checkpoint::save(&without, &plan, &TrainState::default(), &p, &p, None).unwrap();
    assert_eq!(checkpoint::load(&with).unwrap().stats, Some(stats.clone()));
    assert_eq!(checkpoint::load(&without).unwrap().stats, None);
    // One bit of the mean image flipped (found in the file by its values).
    let mut bytes = std::fs::read(&with).unwrap();
    let needle: Vec<u8> = [3.0f32, 4.5, 6.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    bytes[at] ^= 1;
    std::fs::write(&with, &bytes).unwrap();
    let e = format!("{:#}", checkpoint::load(&with).err().unwrap());
    assert!(
        e.contains("inference.mean does not match its checksum"),
        "{e}"
    );
}
