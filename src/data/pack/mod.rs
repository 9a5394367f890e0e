//! Packs: a dataset's images cut once to the paper's base images (shorter side to `base`, the
//! central `base`×`base`, [`super::decode::to_base`]), re-encoded as JPEG and stored in tar shards, so
//! that training decodes a 256×256 JPEG per image instead of a full photograph plus a resize.
//!
//! One split of a pack is a folder (`<pack>/train/`, `<pack>/val/`, so that a pack root is read
//! like any dataset root):
//! - `shard-000000.tar`, `shard-000001.tar`, …: WebDataset-style tar shards (ustar, no
//!   compression); sample `k` of the source is the members `<k:08>.jpg` (the base image) and
//!   `<k:08>.cls` (its label index, decimal). `tar tvf` lists them, `tar xf` extracts them, and
//!   WebDataset and torchdata read them as they are. Tar rather than a private format because the
//!   shards are tens of gigabytes a user may want to check, copy or feed to another tool.
//! - `shard-000000.idx`, …: each shard's index, a `#` line of JSON (what the shard was made from
//!   and holds) then one line per image, `offset<TAB>size<TAB>label<TAB>key<TAB>source name`
//!   (tabs and newlines in names escaped as `\t` and `\n`), so the loader reads every image by a
//!   positioned read without walking the tar headers, and `cut`/`awk` read it too.
//! - `pack.json`: written last, when every shard is complete: the classes, the options, the
//!   shards with their image counts and byte lengths, and the files of the source that could not
//!   be read (left out, by name).
//!
//! Shard `s` holds the source samples `s·shard_images ..` in the source's order (class, then
//! name), less the unreadable ones, each encoded with the same encoder and quality: the same
//! source gives byte-identical shards with any thread count. A shard's tar and index are each
//! written to a temporary name and renamed; a shard whose index exists and agrees with its tar
//! is complete, so an interrupted pack resumes at the first shard that is not. The mean image and
//! colour PCA ([`super::Stats`]) are summed in the same pass, over the packed JPEGs as the loader
//! will decode them (shards found complete are read back for theirs).
//!
//! - `format`: the manifest, shard names and index lines;
//! - `reader`: a split opened and checked for reading (`source` reads its images);
//! - `writer`: a split written from any dataset.

pub mod format;
pub(crate) mod reader;
pub mod writer;

pub use format::{FORMAT, MANIFEST, Manifest, PackOptions, ShardEntry, Skipped};
pub use writer::{Packed, check_destination, pack_split};
