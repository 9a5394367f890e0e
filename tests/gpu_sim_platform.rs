//! The simulated CUDA platform as a platform (DESIGN.md §5, level 3b): its libraries carry the
//! names a real installation gives them and no other, and export every entry point the engine
//! can ask for, directly or through cudarc's wrappers, so that no call reaches a missing symbol
//! (cudarc panics on one).
//!
//! "Can ask for": cudarc's bindings load each function by a name literal at its first call;
//! only the functions linked into the engine keep their literal. So the names are those of
//! cudarc's bindings (read from its source, found with `cargo metadata`) and of the engine's own
//! NCCL binding that occur in the `alexnet` binary's read-only data.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const SIM_DIR: &str = env!("ALEXNET_SIM_DIR");

/// (library, the prefixes of the names it must export)
const LIBRARIES: [(&str, &[&str]); 3] = [
    ("libcuda.so.1", &["cu"]),
    ("libcublas.so.13", &["cublas"]),
    ("libnccl.so.2", &["nccl"]),
];

/// The sections of an ELF64 little-endian file: (name, file offset, size, type).
fn sections(elf: &[u8]) -> Vec<(String, usize, usize, u32)> {
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    let (shoff, shentsize, shnum, shstrndx) =
        (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e));
    let header = |i: usize| shoff + i * shentsize;
    let names = u64_at(header(shstrndx) + 0x18);
    (0..shnum)
        .map(|i| {
            let h = header(i);
            let name_at = names + u32_at(h) as usize;
            let end = elf[name_at..].iter().position(|&b| b == 0).unwrap();
            let name = String::from_utf8_lossy(&elf[name_at..name_at + end]).into_owned();
            (name, u64_at(h + 0x18), u64_at(h + 0x20), u32_at(h + 4))
        })
        .collect()
}

fn section<'a>(elf: &'a [u8], name: &str) -> &'a [u8] {
    let (_, off, size, _) = sections(elf)
        .into_iter()
        .find(|s| s.0 == name)
        .unwrap_or_else(|| panic!("no {name} section"));
    &elf[off..off + size]
}

/// The symbols a shared library defines and exports (its .dynsym entries with a section).
fn exports(path: &Path) -> BTreeSet<String> {
    let elf = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (dynsym, dynstr) = (section(&elf, ".dynsym"), section(&elf, ".dynstr"));
    dynsym
        .chunks_exact(24)
        .filter(|s| u16::from_le_bytes([s[6], s[7]]) != 0) // st_shndx: defined here
        .map(|s| {
            let at = u32::from_le_bytes(s[..4].try_into().unwrap()) as usize;
            let end = dynstr[at..].iter().position(|&b| b == 0).unwrap();
            String::from_utf8_lossy(&dynstr[at..at + end]).into_owned()
        })
        .collect()
}

/// cudarc's source folder, from `cargo metadata`.
fn cudarc_source() -> Option<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let manifest = meta["packages"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == "cudarc")?["manifest_path"]
        .as_str()?
        .to_string();
    Some(Path::new(&manifest).parent()?.join("src"))
}

/// The names in `text` between `open` and the next `"`.
fn quoted_after(text: &str, open: &str) -> Vec<String> {
    text.match_indices(open)
        .filter_map(|(i, _)| {
            let rest = &text[i + open.len()..];
            rest.find('"').map(|end| rest[..end].to_string())
        })
        .collect()
}

/// Whether `name` occurs in `data` as a whole name: not followed by more of an API name (an
/// upper-case letter, a digit or `_`; the literals of the binary run into each other, so a
/// lower-case letter after it starts another string).
fn occurs(data: &[u8], name: &str) -> bool {
    memchr::memmem::find_iter(data, name.as_bytes()).any(|i| {
        data.get(i + name.len())
            .is_none_or(|&b| !(b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'))
    })
}

#[test]
fn the_libraries_have_the_installed_names_and_no_other() {
    let mut files: Vec<String> = std::fs::read_dir(SIM_DIR)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["libcublas.so.13", "libcuda.so.1", "libnccl.so.2"]);
    for (lib, _) in LIBRARIES {
        let elf = std::fs::read(Path::new(SIM_DIR).join(lib)).unwrap();
        // DT_SONAME is the name the loader records and matches: the installed one.
        let dynamic = section(&elf, ".dynamic");
        let dynstr = section(&elf, ".dynstr");
        let soname = dynamic
            .chunks_exact(16)
            .find(|d| u64::from_le_bytes(d[..8].try_into().unwrap()) == 14)
            .map(|d| {
                let at = u64::from_le_bytes(d[8..].try_into().unwrap()) as usize;
                let end = dynstr[at..].iter().position(|&b| b == 0).unwrap();
                String::from_utf8_lossy(&dynstr[at..at + end]).into_owned()
            });
        assert_eq!(soname.as_deref(), Some(lib), "{lib}'s soname");
    }
}

#[test]
fn every_entry_point_the_engine_can_ask_for_is_exported() {
    let Some(cudarc) = cudarc_source() else {
        eprintln!(
            "SKIP every_entry_point_the_engine_can_ask_for_is_exported: cargo metadata found no cudarc source"
        );
        return;
    };
    let mut names: BTreeSet<String> = BTreeSet::new();
    for file in ["driver/sys/mod.rs", "cublas/sys/mod.rs"] {
        let text = std::fs::read_to_string(cudarc.join(file)).unwrap();
        names.extend(quoted_after(&text, "load::<_F>(\""));
    }
    let nccl =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cuda/nccl.rs"))
            .unwrap();
    names.extend(quoted_after(&nccl, "symbol!(\""));
    assert!(
        names.len() > 1000,
        "only {} names found in cudarc's bindings",
        names.len()
    );
    let binary = std::fs::read(env!("CARGO_BIN_EXE_alexnet")).unwrap();
    let rodata = section(&binary, ".rodata");
    let asked: Vec<&String> = names.iter().filter(|n| occurs(rodata, n)).collect();
    let mut missing = Vec::new();
    for (lib, prefixes) in LIBRARIES {
        let exported = exports(&Path::new(SIM_DIR).join(lib));
        let (mut lib_names, mut ours) = (0, Vec::new());
        for n in &asked {
            // The longest prefix decides: cublas* names are not the driver's.
            let owner = LIBRARIES
                .iter()
                .filter(|(_, ps)| ps.iter().any(|p| n.starts_with(p)))
                .max_by_key(|(_, ps)| ps.iter().map(|p| p.len()).max())
                .map(|(l, _)| *l);
            if owner == Some(lib) && prefixes.iter().any(|p| n.starts_with(p)) {
                lib_names += 1;
                ours.push(n.as_str());
                if !exported.contains(n.as_str()) {
                    missing.push(format!("{lib}: {n}"));
                }
            }
        }
        println!("{lib}: the engine can ask for {lib_names}: {ours:?}");
    }
    assert!(
        missing.is_empty(),
        "the simulated platform lacks: {missing:?}"
    );
    // The check sees the engine's calls (so it can fail): the ones it surely makes are there.
    for n in [
        "cuInit",
        "cuLaunchKernel",
        "cuMemcpyPeerAsync",
        "cublasSgemm_v2",
        "ncclAllReduce",
    ] {
        assert!(
            asked.iter().any(|a| a.as_str() == n),
            "{n} not found in the binary"
        );
    }
}
