//! Where service images come from.

use super::*;

/// Where service images come from.
pub trait Images: Send + Sync {
    /// The unpacked layers and config of `reference`.
    fn layers(&self, reference: &str) -> Result<ImageLayers, String>;
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
    fn layers(&self, reference: &str) -> Result<ImageLayers, String> {
        let image = self
            .store
            .resolve(reference)
            .map_err(|e| format!("image `{reference}`: {e}"))?;
        let layers = self
            .store
            .unpack_image(
                &image,
                &berth_images::unpack::Limits::default(),
                &berth_images::progress::Quiet,
            )
            .map_err(|e| format!("image `{reference}`: {e}"))?;
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
    fn layers(&self, _: &str) -> Result<ImageLayers, String> {
        Ok(self.0.clone())
    }
}
