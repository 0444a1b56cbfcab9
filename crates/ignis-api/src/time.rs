//! Record times: Unix seconds in the types (and the state DB's columns),
//! RFC 3339 in UTC on the wire (`"created": "2026-11-30T20:23:16Z"`), as
//! Docker prints them. Reading accepts both forms, so records written by
//! older versions (integers) still parse.
//!
//! ```ignore
//! #[serde(with = "crate::time::rfc3339")]
//! pub created: i64,
//! #[serde(default, with = "crate::time::rfc3339::option")]
//! pub started_at: Option<i64>,
//! ```

/// `i64` Unix seconds as an RFC 3339 string.
pub mod rfc3339 {
    use serde::{de, Deserializer, Serializer};
    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;

    /// Unix seconds as RFC 3339 in UTC (`None` out of the representable
    /// range, years 1..=9999).
    pub fn format(secs: i64) -> Option<String> {
        OffsetDateTime::from_unix_timestamp(secs)
            .ok()?
            .format(&Rfc3339)
            .ok()
    }

    /// An RFC 3339 time (any offset) as Unix seconds.
    pub fn parse(s: &str) -> Option<i64> {
        OffsetDateTime::parse(s, &Rfc3339)
            .ok()
            .map(OffsetDateTime::unix_timestamp)
    }

    pub fn serialize<S: Serializer>(secs: &i64, s: S) -> Result<S::Ok, S::Error> {
        match format(*secs) {
            Some(t) => s.serialize_str(&t),
            // Not a date RFC 3339 can write: the number as it is.
            None => s.serialize_i64(*secs),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        d.deserialize_any(Visitor)
    }

    struct Visitor;

    impl de::Visitor<'_> for Visitor {
        type Value = i64;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an RFC 3339 time or Unix seconds")
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom(format!("time {v} out of range")))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
            parse(v).ok_or_else(|| E::custom(format!("not an RFC 3339 time: {v:?}")))
        }
    }

    /// The same for `Option<i64>` (`null` or absent: `None`).
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(secs: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
            match secs {
                Some(v) => super::serialize(v, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
            #[derive(Deserialize)]
            struct Wrap(#[serde(with = "super")] i64);
            Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct R {
        #[serde(with = "super::rfc3339")]
        created: i64,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "super::rfc3339::option"
        )]
        at: Option<i64>,
    }

    #[test]
    fn writes_rfc3339_and_reads_both_forms() {
        let r = R {
            created: 1_796_070_196,
            at: Some(0),
        };
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"created": "2026-11-30T20:23:16Z", "at": "1970-01-01T00:00:00Z"})
        );
        assert_eq!(serde_json::from_value::<R>(j).unwrap(), r);
        // Older records: integers; an absent or null option.
        let old: R = serde_json::from_str(r#"{"created": 1796070196, "at": 5}"#).unwrap();
        assert_eq!((old.created, old.at), (1_796_070_196, Some(5)));
        let none: R = serde_json::from_str(r#"{"created": 1}"#).unwrap();
        assert_eq!(none.at, None);
        let null: R = serde_json::from_str(r#"{"created": 1, "at": null}"#).unwrap();
        assert_eq!(null.at, None);
        assert_eq!(
            serde_json::to_string(&R {
                created: 1,
                at: None
            })
            .unwrap(),
            r#"{"created":"1970-01-01T00:00:01Z"}"#
        );
        // Any offset reads as the same instant.
        let off: R = serde_json::from_str(r#"{"created": "2026-11-30T21:23:16+01:00"}"#).unwrap();
        assert_eq!(off.created, 1_796_070_196);
        assert!(serde_json::from_str::<R>(r#"{"created": "yesterday"}"#).is_err());
    }
}
