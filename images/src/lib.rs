//! Everything Berth knows about OCI images: the store, import/export, pull, the
//! safe layer unpacker and rootfs assembly (ARCHITECTURE.md §4).

pub mod archive;
pub mod digest;
pub mod http;
pub mod oci;
pub mod os_image;
pub mod progress;
pub mod pull;
pub mod recipe;
pub mod reference;
pub mod rootfs;
pub mod store;
pub mod unpack;

pub use digest::Digest;
pub use reference::Reference;
pub use store::{Image, Store, StoreError};
