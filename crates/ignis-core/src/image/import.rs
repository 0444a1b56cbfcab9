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
    use std::io::ErrorKind as Io;
    let kind = match &e {
        // A file that is not an archive (the tar reader's parse errors are
        // `Other`), or one cut short: bad input, not a host failure.
        ImportError::Read { source, .. }
            if matches!(
                source.kind(),
                Io::Other | Io::InvalidData | Io::UnexpectedEof
            ) =>
        {
            ErrorKind::Invalid
        }
        ImportError::Read { .. } | ImportError::Store(_) => ErrorKind::Internal,
        _ => ErrorKind::Invalid,
    };
    Error::with_source(kind, "import failed", e)
}
