//! Name or unique-ID-prefix matching, as Ignite and Docker do.

use ignis_state::ObjectRow;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("no {kind} named or with ID prefix '{query}'")]
    NotFound { kind: String, query: String },
    #[error("'{query}' matches several {kind}s: {}; give more of the ID or a full name", candidates.join(", "))]
    Ambiguous {
        kind: String,
        query: String,
        candidates: Vec<String>,
    },
}

/// Finds the one row that `query` names: an exact name (as typed or as
/// `normalized`), a full ID (with or without `sha256:`), or a unique ID
/// prefix.
pub fn resolve<'a>(
    kind: &str,
    query: &str,
    normalized: Option<&str>,
    rows: &'a [ObjectRow],
) -> Result<&'a ObjectRow, ResolveError> {
    let not_found = || ResolveError::NotFound {
        kind: kind.to_string(),
        query: query.to_string(),
    };
    if query.is_empty() {
        return Err(not_found());
    }
    if let Some(r) = rows.iter().find(|r| {
        r.names
            .iter()
            .any(|n| n == query || Some(n.as_str()) == normalized)
    }) {
        return Ok(r);
    }
    let hex = query.strip_prefix("sha256:").unwrap_or(query);
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(not_found());
    }
    let hex = hex.to_ascii_lowercase();
    let matches: Vec<&ObjectRow> = rows
        .iter()
        .filter(|r| r.id.trim_start_matches("sha256:").starts_with(&hex))
        .collect();
    match matches.as_slice() {
        [] => Err(not_found()),
        [one] => Ok(one),
        many => Err(ResolveError::Ambiguous {
            kind: kind.to_string(),
            query: query.to_string(),
            candidates: many
                .iter()
                .map(|r| {
                    let short = ignis_api::short_id(&r.id);
                    match r.names.first() {
                        Some(n) => format!("{short} ({n})"),
                        None => short.to_string(),
                    }
                })
                .collect(),
        }),
    }
}

impl From<ResolveError> for crate::Error {
    fn from(e: ResolveError) -> Self {
        let kind = match e {
            ResolveError::NotFound { .. } => crate::ErrorKind::NotFound,
            ResolveError::Ambiguous { .. } => crate::ErrorKind::Ambiguous,
        };
        crate::Error::new(kind, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, names: &[&str]) -> ObjectRow {
        ObjectRow {
            id: format!("sha256:{id}"),
            created: 0,
            record: String::new(),
            names: names.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn matches_names_ids_and_unique_prefixes() {
        let rows = vec![
            row("abc123", &["docker.io/library/busybox:latest"]),
            row("abd456", &["alpine"]),
        ];
        assert_eq!(
            resolve("image", "alpine", None, &rows).unwrap().id,
            "sha256:abd456"
        );
        assert_eq!(
            resolve(
                "image",
                "busybox",
                Some("docker.io/library/busybox:latest"),
                &rows
            )
            .unwrap()
            .id,
            "sha256:abc123"
        );
        assert_eq!(
            resolve("image", "abc", None, &rows).unwrap().id,
            "sha256:abc123"
        );
        assert_eq!(
            resolve("image", "sha256:abd4", None, &rows).unwrap().id,
            "sha256:abd456"
        );
        assert_eq!(
            resolve("image", "ABD", None, &rows).unwrap().id,
            "sha256:abd456"
        );
    }

    #[test]
    fn ambiguous_prefix_lists_candidates() {
        let rows = vec![row("abc123", &["busybox"]), row("abd456", &[])];
        let err = resolve("image", "ab", None, &rows).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ResolveError::Ambiguous { .. }));
        assert!(
            msg.contains("abc123 (busybox)") && msg.contains("abd456"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_names_and_prefixes_are_not_found() {
        let rows = vec![row("abc123", &["busybox"])];
        for q in ["", "nginx", "ff", "busy"] {
            assert!(
                matches!(
                    resolve("image", q, None, &rows),
                    Err(ResolveError::NotFound { .. })
                ),
                "{q}"
            );
        }
    }
}
