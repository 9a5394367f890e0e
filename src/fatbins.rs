//! The GPU images of the kernels, compiled by build.rs with nvcc from `cuda/*.cu` (one fatbin
//! per file: SASS for each target in `CUDA_ARCHS` plus PTX of the lowest, which newer GPUs JIT)
//! and embedded here for the CUDA runtime to load. A build without nvcc has none
//! (`KERNELS_EMBEDDED` is false); the host executor (`crate::emu`) runs the kernels either way.

// KERNELS_EMBEDDED: bool, CUDA_ARCHS: &[u32], FATBINS: &[(module, image)].
include!(concat!(env!("OUT_DIR"), "/fatbins.rs"));

/// The fatbin of `cuda/<module>.cu`, if nvcc compiled it.
pub fn fatbin(module: &str) -> Option<&'static [u8]> {
    FATBINS
        .iter()
        .find(|(m, _)| *m == module)
        .map(|(_, image)| *image)
}
