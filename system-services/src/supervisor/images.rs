//! Where service images come from.

use super::*;

/// Why a service's image is not there to run.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The store does not hold it, or cannot unpack it.
    #[error("image `{reference}`: {source}")]
    Store {
        reference: String,
        #[source]
        source: berth_images::StoreError,
    },
    /// The store itself could not be opened (every start says why).
    #[error("image `{reference}`: the image store cannot be opened: {source}")]
    NoStore {
        reference: String,
        #[source]
        source: Arc<berth_images::StoreError>,
    },
    /// No store had it: what each (by its root) said.
    #[error("{}", .0.iter().map(|(root, e)| format!("{}: {e}", root.display())).collect::<Vec<_>>().join("; "))]
    Nowhere(Vec<(PathBuf, ImageError)>),
}

/// Where service images come from.
pub trait Images: Send + Sync {
    /// The unpacked layers and config of `reference`.
    fn layers(&self, reference: &str) -> Result<ImageLayers, ImageError>;
}

/// Images from Berth's OCI store, layers unpacked on first use.
#[derive(Debug)]
pub struct StoreImages {
    store: Store,
}

impl StoreImages {
    pub fn new(store: Store) -> StoreImages {
        StoreImages { store }
    }
}

impl Images for StoreImages {
    fn layers(&self, reference: &str) -> Result<ImageLayers, ImageError> {
        let store_error = |source| ImageError::Store {
            reference: reference.to_string(),
            source,
        };
        let image = self.store.resolve(reference).map_err(store_error)?;
        let layers = self
            .store
            .unpack_image(
                &image,
                &berth_images::unpack::Limits::default(),
                &berth_images::progress::Quiet,
            )
            .map_err(store_error)?;
        Ok(ImageLayers {
            layers,
            config: image.config.config.clone(),
        })
    }
}

/// The same layers for every reference (tests, or a single system image).
#[derive(Debug, Clone)]
pub struct FixedImages(pub ImageLayers);

impl Images for FixedImages {
    fn layers(&self, _: &str) -> Result<ImageLayers, ImageError> {
        Ok(self.0.clone())
    }
}
