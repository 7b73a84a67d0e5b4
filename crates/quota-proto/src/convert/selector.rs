//! Keys and plans named by id or by name ([`Selector`]), and ids in string fields.

use crate::v1;
use quota_core::{KeyId, LeaseId, Name, PlanId, ValidationError};
use std::str::FromStr;

/// A key or a plan named by id or by name. The server resolves a name against its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector<I> {
    Id(I),
    Name(Name),
}

impl<I: Copy> Selector<I> {
    /// Resolve to an id, looking a name up with `by_name`; `None` when nothing has it.
    pub fn resolve(&self, by_name: impl FnOnce(&Name) -> Option<I>) -> Option<I> {
        match self {
            Selector::Id(id) => Some(*id),
            Selector::Name(name) => by_name(name),
        }
    }
}

impl<I: std::fmt::Display> std::fmt::Display for Selector<I> {
    /// The id (`k12`), or the name in quotes, as error messages show it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Id(id) => write!(f, "{id}"),
            Selector::Name(name) => write!(f, "named `{name}`"),
        }
    }
}

/// Parse an id in a string field (`k12`, `p3`, `l9`), naming `field` when it is not one.
pub fn parse_id<I>(field: &str, value: &str) -> Result<I, ValidationError>
where
    I: FromStr<Err = ValidationError>,
{
    value
        .parse::<I>()
        .map_err(|e| crate::convert::rename_field(e, field))
}

fn selector<I>(id: Option<String>, name: Option<String>) -> Result<Selector<I>, ValidationError>
where
    I: FromStr<Err = ValidationError>,
{
    match (id, name) {
        (Some(id), _) => parse_id("id", &id).map(Selector::Id),
        (None, Some(name)) => Name::new(name).map(Selector::Name),
        (None, None) => Err(ValidationError::invalid("", "set either `id` or `name`")),
    }
}

impl TryFrom<v1::KeySelector> for Selector<KeyId> {
    type Error = ValidationError;

    fn try_from(value: v1::KeySelector) -> Result<Self, ValidationError> {
        use v1::key_selector::By;
        match value.by {
            Some(By::Id(id)) => selector(Some(id), None),
            Some(By::Name(name)) => selector(None, Some(name)),
            None => selector(None, None),
        }
    }
}

impl TryFrom<v1::PlanSelector> for Selector<PlanId> {
    type Error = ValidationError;

    fn try_from(value: v1::PlanSelector) -> Result<Self, ValidationError> {
        use v1::plan_selector::By;
        match value.by {
            Some(By::Id(id)) => selector(Some(id), None),
            Some(By::Name(name)) => selector(None, Some(name)),
            None => selector(None, None),
        }
    }
}

impl From<Selector<KeyId>> for v1::KeySelector {
    fn from(value: Selector<KeyId>) -> Self {
        use v1::key_selector::By;
        v1::KeySelector {
            by: Some(match value {
                Selector::Id(id) => By::Id(id.to_string()),
                Selector::Name(name) => By::Name(name.into()),
            }),
        }
    }
}

impl From<Selector<PlanId>> for v1::PlanSelector {
    fn from(value: Selector<PlanId>) -> Self {
        use v1::plan_selector::By;
        v1::PlanSelector {
            by: Some(match value {
                Selector::Id(id) => By::Id(id.to_string()),
                Selector::Name(name) => By::Name(name.into()),
            }),
        }
    }
}

/// Parse a key id field (`key_id`: `k12`).
pub fn key_id(field: &str, value: &str) -> Result<KeyId, ValidationError> {
    parse_id(field, value)
}

/// Parse a plan id field (`plan_id`: `p3`).
pub fn plan_id(field: &str, value: &str) -> Result<PlanId, ValidationError> {
    parse_id(field, value)
}

/// Parse a lease id field (`lease_id`: `l9`).
pub fn lease_id(field: &str, value: &str) -> Result<LeaseId, ValidationError> {
    parse_id(field, value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::required;

    fn key_by(by: Option<v1::key_selector::By>) -> v1::KeySelector {
        v1::KeySelector { by }
    }

    // Property: selectors round-trip by id and by name.
    // Set-up: id k12 and name "alice" for keys, id p3 and name "gold" for plans.
    // Pass: wire -> domain -> wire gives the input back, and resolve() finds the id.
    #[test]
    fn selectors_round_trip() {
        use v1::key_selector::By;
        let by_id = key_by(Some(By::Id("k12".into())));
        let sel = Selector::<KeyId>::try_from(by_id.clone()).unwrap();
        assert_eq!(sel, Selector::Id(KeyId(12)));
        assert_eq!(v1::KeySelector::from(sel.clone()), by_id);
        assert_eq!(sel.resolve(|_| None), Some(KeyId(12)));

        let by_name = key_by(Some(By::Name("alice".into())));
        let sel = Selector::<KeyId>::try_from(by_name.clone()).unwrap();
        assert_eq!(v1::KeySelector::from(sel.clone()), by_name);
        assert_eq!(
            sel.resolve(|n| (n.as_str() == "alice").then_some(KeyId(4))),
            Some(KeyId(4))
        );

        let plan = v1::PlanSelector {
            by: Some(v1::plan_selector::By::Name("gold".into())),
        };
        let sel = Selector::<PlanId>::try_from(plan.clone()).unwrap();
        assert_eq!(v1::PlanSelector::from(sel), plan);
        let plan = v1::PlanSelector {
            by: Some(v1::plan_selector::By::Id("p3".into())),
        };
        assert_eq!(
            Selector::<PlanId>::try_from(plan),
            Ok(Selector::Id(PlanId(3)))
        );
    }

    // Property: each malformed selector is refused with the field path of the request.
    // Set-up: a plan id given for a key, an empty name, no choice, and an absent selector,
    // each converted as the `key` field of a request.
    // Pass: errors name key.id, key.name, key and key.
    #[test]
    fn bad_selectors_name_their_field() {
        use v1::key_selector::By;
        let cases = [
            (Some(key_by(Some(By::Id("p3".into())))), "key.id"),
            (Some(key_by(Some(By::Name(String::new())))), "key.name"),
            (Some(key_by(None)), "key"),
            (None, "key"),
        ];
        for (input, field) in cases {
            let err = required::<_, Selector<KeyId>>("key", input).unwrap_err();
            assert_eq!(err.field(), field, "{err}");
        }
        assert_eq!(lease_id("lease_id", "x").unwrap_err().field(), "lease_id");
        assert_eq!(plan_id("plan_id", "p0").unwrap_err().field(), "plan_id");
        assert_eq!(key_id("key_id", "k7"), Ok(KeyId(7)));
    }
}
