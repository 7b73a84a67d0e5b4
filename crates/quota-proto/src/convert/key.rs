//! API keys: [`KeySpec`] and [`KeyPatch`] in, [`ApiKey`] and [`Association`] out.
//!
//! An [`ApiKey`] goes out with its public prefix only: never its secret (which the state
//! does not have) nor the secret's hash.

use crate::convert::{millis, prefixed, timestamp};
use crate::v1;
use quota_core::{
    ApiKey, Association, Description, KeyPatch, KeySpec, Name, Owner, Tags, ValidationError,
};
use std::collections::BTreeMap;

/// Validate wire tags.
fn tags(tags: BTreeMap<String, String>) -> Result<Tags, ValidationError> {
    Tags::from_pairs(tags)
}

fn tags_to_wire(tags: &Tags) -> BTreeMap<String, String> {
    tags.iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned()))
        .collect()
}

impl TryFrom<v1::KeySpec> for KeySpec {
    type Error = ValidationError;

    /// Fields: `name`, `description`, `owner`, `expires_at`, `tags`, `tags.key`,
    /// `tags.value`. An absent `enabled` means enabled.
    fn try_from(value: v1::KeySpec) -> Result<Self, ValidationError> {
        Ok(KeySpec {
            name: Name::new(value.name)?,
            description: Description::new(value.description)?,
            owner: value.owner.map(Owner::new).transpose()?,
            enabled: value.enabled.unwrap_or(true),
            expires_at: timestamp("expires_at", value.expires_at)?,
            tags: tags(value.tags)?,
        })
    }
}

impl From<KeySpec> for v1::KeySpec {
    fn from(spec: KeySpec) -> Self {
        v1::KeySpec {
            tags: tags_to_wire(&spec.tags),
            name: spec.name.into(),
            description: spec.description.into(),
            owner: spec.owner.map(String::from),
            enabled: Some(spec.enabled),
            expires_at: millis(spec.expires_at),
        }
    }
}

impl TryFrom<v1::KeyPatch> for KeyPatch {
    type Error = ValidationError;

    /// Fields as for [`KeySpec`]; tags are under `tags.tags` (the wrapping `TagSet`).
    /// An empty `owner` removes the owner; an `expires_at` of 0 removes the expiry.
    fn try_from(value: v1::KeyPatch) -> Result<Self, ValidationError> {
        Ok(KeyPatch {
            name: value.name.map(Name::new).transpose()?,
            description: value.description.map(Description::new).transpose()?,
            owner: value
                .owner
                .map(|o| {
                    if o.is_empty() {
                        Ok(None)
                    } else {
                        Owner::new(o).map(Some)
                    }
                })
                .transpose()?,
            enabled: value.enabled,
            expires_at: value
                .expires_at
                .map(|ms| timestamp("expires_at", ms))
                .transpose()?,
            tags: value
                .tags
                .map(|set| tags(set.tags).map_err(prefixed("tags")))
                .transpose()?,
        })
    }
}

impl From<KeyPatch> for v1::KeyPatch {
    fn from(patch: KeyPatch) -> Self {
        v1::KeyPatch {
            name: patch.name.map(String::from),
            description: patch.description.map(String::from),
            owner: patch.owner.map(|o| o.map(String::from).unwrap_or_default()),
            enabled: patch.enabled,
            expires_at: patch.expires_at.map(millis),
            tags: patch.tags.map(|t| v1::TagSet {
                tags: tags_to_wire(&t),
            }),
        }
    }
}

impl From<&ApiKey> for v1::ApiKey {
    /// The key as callers see it: the public prefix of the secret, never the secret's hash.
    fn from(key: &ApiKey) -> Self {
        v1::ApiKey {
            id: key.id.to_string(),
            name: key.spec.name.as_str().to_owned(),
            description: key.spec.description.as_str().to_owned(),
            owner: key.spec.owner.as_ref().map(|o| o.as_str().to_owned()),
            enabled: key.spec.enabled,
            expires_at: millis(key.spec.expires_at),
            tags: tags_to_wire(&key.spec.tags),
            prefix: key.secret.prefix.clone(),
            imported: key.imported,
            previous_valid_until: millis(key.previous.as_ref().map(|p| p.valid_until)),
            created_at: key.created_at.as_millis(),
            updated_at: key.updated_at.as_millis(),
        }
    }
}

impl From<ApiKey> for v1::ApiKey {
    fn from(key: ApiKey) -> Self {
        v1::ApiKey::from(&key)
    }
}

impl From<&Association> for v1::Association {
    fn from(a: &Association) -> Self {
        v1::Association {
            plan_id: a.plan.to_string(),
            key_id: a.key.to_string(),
            extra_per_period: a.extra_per_period.get(),
            attached_at: a.attached_at.as_millis(),
        }
    }
}

impl From<Association> for v1::Association {
    fn from(a: Association) -> Self {
        v1::Association::from(&a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::required;
    use quota_core::limits::MAX_TAGS_PER_KEY;
    use quota_core::{Extra, KeyId, PlanId, PreviousSecret, Secret, SecretDigest, Timestamp};

    fn wire_spec() -> v1::KeySpec {
        v1::KeySpec {
            name: "alice-prod".into(),
            description: "Alice's production key".into(),
            owner: Some("cust-42".into()),
            enabled: Some(false),
            expires_at: 1_800_000_000_000,
            tags: BTreeMap::from([
                ("env".into(), "prod".into()),
                ("team".into(), String::new()),
            ]),
        }
    }

    // Property: a valid wire KeySpec survives wire -> domain -> wire unchanged.
    // Set-up: a spec with every field set.
    // Pass: equality after the round trip, and the domain values are the wire values.
    #[test]
    fn key_spec_round_trip() {
        let spec = KeySpec::try_from(wire_spec()).unwrap();
        assert_eq!(spec.name.as_str(), "alice-prod");
        assert!(!spec.enabled);
        assert_eq!(spec.expires_at, Some(Timestamp(1_800_000_000_000)));
        assert_eq!(v1::KeySpec::from(spec), wire_spec());
    }

    // Property: absent optional fields take their documented defaults.
    // Set-up: a spec with only a name.
    // Pass: enabled, no owner, no expiry, no tags.
    #[test]
    fn key_spec_defaults() {
        let spec = KeySpec::try_from(v1::KeySpec {
            name: "k".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(spec, KeySpec::named(Name::new("k").unwrap()));
    }

    // Property: every invalid KeySpec field is refused, named by its path in the request.
    // Set-up: one broken field per case, converted as the `spec` field of a request.
    // Pass: the error names that field.
    #[test]
    fn bad_key_spec_fields_are_named() {
        let too_many: BTreeMap<String, String> = (0..=MAX_TAGS_PER_KEY)
            .map(|i| (format!("t{i}"), String::new()))
            .collect();
        let cases: Vec<(v1::KeySpec, &str)> = vec![
            (
                v1::KeySpec {
                    name: String::new(),
                    ..wire_spec()
                },
                "spec.name",
            ),
            (
                v1::KeySpec {
                    description: "x".repeat(2000),
                    ..wire_spec()
                },
                "spec.description",
            ),
            (
                v1::KeySpec {
                    owner: Some(String::new()),
                    ..wire_spec()
                },
                "spec.owner",
            ),
            (
                v1::KeySpec {
                    expires_at: u64::MAX,
                    ..wire_spec()
                },
                "spec.expires_at",
            ),
            (
                v1::KeySpec {
                    tags: BTreeMap::from([(String::new(), "v".into())]),
                    ..wire_spec()
                },
                "spec.tags.key",
            ),
            (
                v1::KeySpec {
                    tags: BTreeMap::from([("k".into(), "a\u{7}".into())]),
                    ..wire_spec()
                },
                "spec.tags.value",
            ),
            (
                v1::KeySpec {
                    tags: too_many,
                    ..wire_spec()
                },
                "spec.tags",
            ),
        ];
        for (input, field) in cases {
            let err = required::<_, KeySpec>("spec", Some(input)).unwrap_err();
            assert_eq!(err.field(), field, "{err}");
        }
        let err = required::<v1::KeySpec, KeySpec>("spec", None).unwrap_err();
        assert_eq!(err.field(), "spec");
    }

    // Property: a patch changes only what it names; "" and 0 clear owner and expiry.
    // Set-up: an empty patch, a full patch, and a clearing patch.
    // Pass: the domain patches hold exactly those changes, and round-trip to the wire.
    #[test]
    fn key_patch_round_trip() {
        let empty = KeyPatch::try_from(v1::KeyPatch::default()).unwrap();
        assert_eq!(empty, KeyPatch::default());

        let full = v1::KeyPatch {
            name: Some("new".into()),
            description: Some(String::new()),
            owner: Some("cust-1".into()),
            enabled: Some(true),
            expires_at: Some(5),
            tags: Some(v1::TagSet {
                tags: BTreeMap::from([("a".into(), "b".into())]),
            }),
        };
        let patch = KeyPatch::try_from(full.clone()).unwrap();
        assert_eq!(patch.owner, Some(Some(Owner::new("cust-1").unwrap())));
        assert_eq!(patch.expires_at, Some(Some(Timestamp(5))));
        assert_eq!(v1::KeyPatch::from(patch), full);

        let clearing = v1::KeyPatch {
            owner: Some(String::new()),
            expires_at: Some(0),
            tags: Some(v1::TagSet::default()),
            ..Default::default()
        };
        let patch = KeyPatch::try_from(clearing.clone()).unwrap();
        assert_eq!(patch.owner, Some(None));
        assert_eq!(patch.expires_at, Some(None));
        assert_eq!(patch.tags, Some(Tags::default()));
        assert_eq!(v1::KeyPatch::from(patch), clearing);
    }

    // Property: every invalid KeyPatch field is refused, named by its path in the request.
    // Set-up: one broken field per case, converted as the `patch` field.
    // Pass: the error names that field.
    #[test]
    fn bad_key_patch_fields_are_named() {
        let cases: Vec<(v1::KeyPatch, &str)> = vec![
            (
                v1::KeyPatch {
                    name: Some(String::new()),
                    ..Default::default()
                },
                "patch.name",
            ),
            (
                v1::KeyPatch {
                    description: Some("\n".into()),
                    ..Default::default()
                },
                "patch.description",
            ),
            (
                v1::KeyPatch {
                    owner: Some("x".repeat(500)),
                    ..Default::default()
                },
                "patch.owner",
            ),
            (
                v1::KeyPatch {
                    expires_at: Some(u64::MAX),
                    ..Default::default()
                },
                "patch.expires_at",
            ),
            (
                v1::KeyPatch {
                    tags: Some(v1::TagSet {
                        tags: BTreeMap::from([(String::new(), String::new())]),
                    }),
                    ..Default::default()
                },
                "patch.tags.tags.key",
            ),
        ];
        for (input, field) in cases {
            let err = required::<_, KeyPatch>("patch", Some(input)).unwrap_err();
            assert_eq!(err.field(), field, "{err}");
        }
    }

    // Property: a key goes out with its public prefix and never its secret or hash.
    // Set-up: a stored key made from a generated secret, with a previous secret in grace.
    // Pass: the fields are copied, the prefix is shown, and neither the secret nor the
    // hex of either hash appears anywhere in the message's debug form.
    #[test]
    fn api_key_never_carries_secret_or_hash() {
        let secret = Secret::generate().unwrap();
        let old = Secret::generate().unwrap();
        let key = ApiKey {
            id: KeyId(12),
            spec: KeySpec::try_from(wire_spec()).unwrap(),
            secret: SecretDigest::of(&secret),
            previous: Some(PreviousSecret {
                hash: old.hash(),
                valid_until: Timestamp(99),
            }),
            imported: false,
            created_at: Timestamp(10),
            updated_at: Timestamp(20),
        };
        let wire = v1::ApiKey::from(&key);
        assert_eq!(wire.id, "k12");
        assert_eq!(wire.name, "alice-prod");
        assert_eq!(wire.owner.as_deref(), Some("cust-42"));
        assert!(!wire.enabled);
        assert_eq!(wire.prefix, secret.public_prefix());
        assert_eq!(wire.previous_valid_until, 99);
        assert_eq!((wire.created_at, wire.updated_at), (10, 20));
        assert_eq!(wire.tags, wire_spec().tags);
        let shown = format!("{wire:?}");
        assert!(!shown.contains(secret.expose()));
        assert!(!shown.contains(&secret.hash().to_hex()));
        assert!(!shown.contains(&old.hash().to_hex()));
        assert!(!shown.contains(&secret.hash().to_hex()[..16]));
    }

    // Property: associations are copied field by field with ids in display form.
    // Set-up: one association. Pass: the wire values.
    #[test]
    fn association_out() {
        let a = Association {
            plan: PlanId(3),
            key: KeyId(12),
            extra_per_period: Extra::new(50).unwrap(),
            attached_at: Timestamp(7),
        };
        assert_eq!(
            v1::Association::from(&a),
            v1::Association {
                plan_id: "p3".into(),
                key_id: "k12".into(),
                extra_per_period: 50,
                attached_at: 7,
            }
        );
    }
}
