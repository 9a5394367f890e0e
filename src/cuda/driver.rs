//! The CUDA driver itself: whether it can be loaded at all, its version, the GPUs it sees and
//! their properties, and how its errors read.
//!
//! cudarc loads `libcuda` on first use and panics when it is missing, and panics again when the
//! driver lacks a symbol of the API it was built for (CUDA 13.0 here). So before any other call
//! [`init`] checks, in order: that the library loads (`sys::is_culib_present`), that `cuInit`
//! succeeds, and that the driver supports CUDA 13.0 (`cuDriverGetVersion`, present in every
//! driver). Every other entry point of `crate::cuda` goes through [`init`].

use anyhow::{Result, anyhow, bail};
use cudarc::driver::{DriverError, result, sys};
use std::sync::OnceLock;

/// What `init` learnt about the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Driver {
    /// The CUDA version the driver supports, as `cuDriverGetVersion` gives it (13000 = 13.0).
    pub version: i32,
    /// GPUs it sees (after `CUDA_VISIBLE_DEVICES`).
    pub devices: usize,
}

impl Driver {
    pub fn version_string(&self) -> String {
        format!("{}.{}", self.version / 1000, self.version % 1000 / 10)
    }
}

/// The oldest driver API the bindings are built for (cudarc's `cuda-13000` feature).
const NEEDED_VERSION: i32 = 13000;

/// Where to go instead of a GPU, appended to every "no GPU" message.
pub const ALTERNATIVES: &str =
    "use --device cpu, or --device emu to run the CUDA kernels on the CPU";

/// Loads and initialises the driver once per process; the answer (or the error) is cached.
pub fn init() -> Result<Driver> {
    static DRIVER: OnceLock<Result<Driver, String>> = OnceLock::new();
    DRIVER
        .get_or_init(|| probe().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

/// Whether `libcuda` can be loaded; nothing else is called.
pub fn library_present() -> bool {
    // SAFETY: tries to dlopen the driver library under its usual names, and closes it again.
    unsafe { sys::is_culib_present() }
}

fn probe() -> Result<Driver> {
    if !library_present() {
        bail!("no CUDA driver on this machine (libcuda could not be loaded); {ALTERNATIVES}");
    }
    // cuInit and cuDriverGetVersion exist in every driver, so these two calls cannot hit a
    // missing symbol whatever the driver's age.
    if let Err(e) = result::init() {
        if e.0 == sys::CUresult::CUDA_ERROR_NO_DEVICE {
            bail!("the CUDA driver sees no GPU on this machine; {ALTERNATIVES}");
        }
        bail!(
            "the CUDA driver failed to initialise (cuInit: {}); {ALTERNATIVES}",
            error_text(&e)
        );
    }
    let mut version = 0;
    // SAFETY: writes one int.
    unsafe { sys::cuDriverGetVersion(&mut version) }
        .result()
        .map_err(|e| anyhow!("cuDriverGetVersion: {}", error_text(&e)))?;
    if version < NEEDED_VERSION {
        bail!(
            "the CUDA driver supports CUDA {}.{}; this build needs 13.0 or newer (driver 580 or later); {ALTERNATIVES}",
            version / 1000,
            version % 1000 / 10
        );
    }
    let devices =
        result::device::get_count().map_err(|e| anyhow!("cuDeviceGetCount: {}", error_text(&e)))?;
    if devices <= 0 {
        bail!("the CUDA driver sees no GPU on this machine; {ALTERNATIVES}");
    }
    Ok(Driver {
        version,
        devices: devices as usize,
    })
}

/// `CUDA_ERROR_NAME (the driver's description)`.
pub fn error_text(e: &DriverError) -> String {
    let name = e
        .error_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|_| format!("{:?}", e.0));
    match e.error_string() {
        Ok(s) => format!("{name} ({})", s.to_string_lossy()),
        Err(_) => name,
    }
}

/// Turns a driver result into an `anyhow` one that says what was being done.
pub trait CheckDriver<T> {
    fn or_fail(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> CheckDriver<T> for Result<T, DriverError> {
    fn or_fail(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| anyhow!("{}: {}", what(), error_text(&e)))
    }
}

/// One GPU as the driver describes it (no context is created to learn this).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuInfo {
    pub ordinal: usize,
    pub name: String,
    pub total_bytes: usize,
    pub compute_capability: (i32, i32),
    pub multiprocessors: i32,
}

/// The driver's `CUdevice` of `ordinal`, with a clear error when there is no such GPU.
pub fn device(ordinal: usize) -> Result<sys::CUdevice> {
    let driver = init()?;
    if ordinal >= driver.devices {
        bail!(
            "there is no GPU {ordinal}: this machine has {} (numbered 0 to {})",
            plural(driver.devices, "GPU"),
            driver.devices - 1
        );
    }
    result::device::get(ordinal as i32).or_fail(|| format!("cuDeviceGet({ordinal})"))
}

pub fn gpu_info(ordinal: usize) -> Result<GpuInfo> {
    let dev = device(ordinal)?;
    let attr = |a: sys::CUdevice_attribute| {
        // SAFETY: `dev` came from cuDeviceGet.
        unsafe { result::device::get_attribute(dev, a) }
            .or_fail(|| format!("GPU {ordinal}: cuDeviceGetAttribute({a:?})"))
    };
    use sys::CUdevice_attribute::*;
    Ok(GpuInfo {
        ordinal,
        name: result::device::get_name(dev).or_fail(|| format!("GPU {ordinal}: name"))?,
        // SAFETY: as above.
        total_bytes: unsafe { result::device::total_mem(dev) }
            .or_fail(|| format!("GPU {ordinal}: total memory"))?,
        compute_capability: (
            attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
            attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
        ),
        multiprocessors: attr(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
    })
}

/// Every GPU the driver sees.
pub fn gpus() -> Result<Vec<GpuInfo>> {
    (0..init()?.devices).map(gpu_info).collect()
}

/// Whether GPU `from` can read and write GPU `to`'s memory directly (`cuDeviceCanAccessPeer`);
/// false for a GPU and itself (there is nothing to enable).
pub fn can_access_peer(from: usize, to: usize) -> Result<bool> {
    if from == to {
        return Ok(false);
    }
    let (a, b) = (device(from)?, device(to)?);
    let mut can = 0;
    // SAFETY: both devices came from cuDeviceGet; writes one int.
    unsafe { sys::cuDeviceCanAccessPeer(&mut can, a, b) }
        .result()
        .or_fail(|| format!("cuDeviceCanAccessPeer({from}, {to})"))?;
    Ok(can != 0)
}

/// How the embedded kernels (SASS for `archs`, PTX of the lowest) run on a GPU of compute
/// capability `cc`.
pub fn kernel_fit(archs: &[u32], cc: (i32, i32)) -> &'static str {
    let sm = (cc.0 * 10 + cc.1) as u32;
    if archs.contains(&sm) {
        "native code"
    } else if archs.first().is_some_and(|&lowest| sm > lowest) {
        "PTX compiled by the driver at first use"
    } else {
        "none (older than every target)"
    }
}

pub fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// Gigabytes, for messages.
pub fn gb(bytes: usize) -> String {
    format!("{:.2} GB", bytes as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_driver_every_entry_point_is_an_error_not_a_panic() {
        if library_present() {
            println!(
                "skipped: this machine has a CUDA driver (the no-driver path is not testable here)"
            );
            return;
        }
        let msg = format!("{:#}", init().unwrap_err());
        assert!(msg.contains("no CUDA driver on this machine"), "{msg}");
        assert!(msg.contains("--device cpu"), "{msg}");
        assert!(gpus().is_err());
        assert!(device(0).is_err());
        assert!(can_access_peer(0, 1).is_err());
        // Cached: the second answer is the same.
        assert_eq!(format!("{:#}", init().unwrap_err()), msg);
    }

    #[test]
    fn kernel_fit_names_native_jit_and_impossible() {
        assert_eq!(kernel_fit(&[80, 90], (9, 0)), "native code");
        assert_eq!(
            kernel_fit(&[80, 90], (10, 0)),
            "PTX compiled by the driver at first use"
        );
        assert_eq!(
            kernel_fit(&[80, 90], (8, 6)),
            "PTX compiled by the driver at first use"
        );
        assert_eq!(
            kernel_fit(&[80, 90], (7, 5)),
            "none (older than every target)"
        );
    }
}
