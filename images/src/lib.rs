//! Everything Berth knows about OCI images: the store, import/export, pull, the
//! safe layer unpacker and rootfs assembly (ARCHITECTURE.md §4).

pub mod digest;
pub mod rootfs;

pub use digest::Digest;
