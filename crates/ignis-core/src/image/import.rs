use std::path::Path;

use ignis_api::ImageRecord;
use ignis_image::import::{import_archive, ImportError};

use crate::{fault, Error, ErrorKind, Ignis};

impl Ignis {
    /// `ignis image import FILE|DIR [--name NAME]`: every image in the
    /// archive is stored; `name` is added to each.
    pub fn image_import(&self, path: &Path, name: Option<&str>) -> Result<Vec<ImageRecord>, Error> {
        if !path.exists() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "{} does not exist; give a docker-save tarball or an OCI layout (dir or tar)",
                    path.display()
                ),
            ));
        }
        let _guard = self.operation_guard()?;
        let fetched = import_archive(&self.store, path).map_err(import_error)?;
        fault::point("import:blobs-stored");
        let extra: Vec<String> = name.map(|n| vec![n.to_string()]).unwrap_or_default();
        fetched
            .into_iter()
            .map(|f| self.commit_image(f, &extra))
            .collect()
    }
}

fn import_error(e: ImportError) -> Error {
    let kind = match &e {
        ImportError::Read { .. } | ImportError::Store(_) => ErrorKind::Internal,
        _ => ErrorKind::Invalid,
    };
    Error::with_source(kind, "import failed", e)
}
