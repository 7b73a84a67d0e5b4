//! Declarative keys and plans: reading a file into the [`Desired`] state, checked as a
//! whole before anything is sent.
//!
//! - [`node`]: YAML and TOML into one tree of values that know their line.
//! - [`serverless`]: the Serverless Framework's API key sections.
//! - [`native`]: quotactl's own format, in YAML or TOML.
//! - [`apply`]: comparing the desired state with the cluster's, printing and making the
//!   changes.

pub mod apply;
pub mod native;
pub mod node;
pub mod serverless;

use crate::cli::FormatArg;
use quota_proto::v1;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The long `--help` of `quotactl apply`.
pub const APPLY_HELP: &str = "\
Make the cluster's keys and plans match a file, comparing by name and sending only what
differs: applying the same file twice changes nothing the second time. The changes are
printed first (+ create, ~ change, - remove); --dry-run stops there. The whole file is
checked before anything is sent: an invalid file names the line and the field, and
nothing is applied. Keys created by apply print their generated secret once.

Two formats are read:

1. A serverless.yml (Serverless Framework), as its users write it. Only the API key
   sections are read; everything else in the file is ignored:
     service: shop
     provider:
       apiGateway:                 # or the older provider.apiKeys / provider.usagePlan
         usagePlan:
           - free:
               quota: {limit: 5000, offset: 2, period: MONTH}
               throttle: {burstLimit: 200, rateLimit: 100}
           - paid:
               quota: {limit: 50000, period: MONTH}
         apiKeys:
           - free:
               - ${opt:stage}-alice            # a name: the secret is generated
           - paid:
               - name: bob
                 value: bob-imported-secret-0123456789   # imported as given
                 description: Bob's key
                 customerId: acme              # the key's owner
                 enabled: true
   - Each usage plan entry's name is the plan name; keys listed under it are attached
     to it. A single usagePlan mapping (no list) makes one plan named SERVICE-STAGE, and
     the keys are a plain list.
   - Every plan covers the API named by `service:` at the stage: --stage, else
     provider.stage, else \"dev\" (what the Framework deploys the plan to).
   - ${opt:stage} and ${sls:stage} are the stage; ${self:service}, ${self:provider.stage}
     and ${env:NAME} are resolved too; `${a, 'fallback'}` is understood.
   - quota.offset follows the current managed-gateway definition: requests subtracted
     from the limit in the initial period.
   - A throttle without burstLimit gets a burst of rateLimit (rounded up).

2. The native format (YAML, or TOML for a .toml file), expressing everything the cluster
   supports:
     plans:
       - name: gold
         description: Paying customers
         throttle: {rate_limit: 100, burst_limit: 200}
         quota: {limit: 100000, period: month, offset: 0, month_start_day: 1}
         # or period: week with week_start: sunday
         stages: [shop/prod, {api: shop, stage: beta}]
         route_throttles: {\"POST /orders\": {rate_limit: 5, burst_limit: 10}}
     keys:
       - name: alice
         description: Alice's key
         owner: acme
         enabled: true
         expires_at: 2026-12-31T00:00:00Z      # or a date, or omit for never
         tags: {team: web}
         value_env: ALICE_KEY                  # import the secret from this variable
         # value: ...                          # or give it inline
         plans: [gold, {plan: silver, extra: 500}]   # extra quota per period

What apply manages: the plans and keys in the file (all their fields), and which keys of
those plans are attached (a key attached to a file's plan but not listed is detached).
Keys and plans not in the file are left alone unless --prune is given.

Imported values cannot be compared (the cluster keeps only a hash): an existing key of
the same name is not imported again, and the plan of changes says so.";

/// A file that cannot be applied: where and why. Nothing was sent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}:{line}: {}{message}", if field.is_empty() { String::new() } else { format!("{field}: ") })]
pub struct ManifestError {
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// The field path in the file, e.g. `provider.apiGateway.usagePlan[0].free.quota.limit`.
    pub field: String,
    pub message: String,
}

/// A plan as the file wants it.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredPlan {
    /// Canonical (validated and converted back, as the server would store it), so it
    /// compares equal to the cluster's copy when nothing differs.
    pub spec: v1::PlanSpec,
    /// Keys attached to the plan, by name, with their extra quota per period.
    pub keys: BTreeMap<String, u64>,
    pub line: usize,
}

/// A key as the file wants it. `None` fields are not managed by the file.
#[derive(Clone, PartialEq)]
pub struct DesiredKey {
    pub name: String,
    pub description: String,
    pub owner: Option<String>,
    pub enabled: bool,
    pub tags: Option<BTreeMap<String, String>>,
    /// Milliseconds since the epoch, 0 = never; `None` = not managed.
    pub expires_at: Option<u64>,
    /// A secret to import when the key is created; `None` = generate one.
    pub value: Option<String>,
    pub line: usize,
}

impl std::fmt::Debug for DesiredKey {
    // The value is a secret: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DesiredKey")
            .field("name", &self.name)
            .field("description", &self.description)
            .field("owner", &self.owner)
            .field("enabled", &self.enabled)
            .field("tags", &self.tags)
            .field("expires_at", &self.expires_at)
            .field("value", &self.value.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Everything a file asks for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Desired {
    pub plans: Vec<DesiredPlan>,
    pub keys: Vec<DesiredKey>,
    /// Which format the file was read as, for the report.
    pub format: &'static str,
}

/// Read and check a file. `stage` is `--stage`.
pub fn load(path: &Path, format: FormatArg, stage: Option<&str>) -> Result<Desired, ManifestError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ManifestError {
        file: file.clone(),
        line: 0,
        field: String::new(),
        message: format!("cannot read the file: {e}"),
    })?;
    load_str(&file, &text, format, stage)
}

/// Read and check a file's text.
pub fn load_str(
    file: &str,
    text: &str,
    format: FormatArg,
    stage: Option<&str>,
) -> Result<Desired, ManifestError> {
    let is_toml = match format {
        FormatArg::Toml => true,
        FormatArg::Auto => file.ends_with(".toml"),
        _ => false,
    };
    let root = if is_toml {
        node::parse_toml(file, text)?
    } else {
        node::parse_yaml(file, text)?
    };
    let serverless = match format {
        FormatArg::Serverless => true,
        FormatArg::Auto => match &root.value {
            node::Value::Map(entries) => {
                node::get(entries, "service").is_some() || node::get(entries, "provider").is_some()
            }
            _ => false,
        },
        _ => false,
    };
    let reader = node::Reader { file };
    let desired = if serverless {
        serverless::read(&reader, &root, stage)?
    } else {
        native::read(&reader, &root)?
    };
    check(&reader, &desired)?;
    Ok(desired)
}

/// Checks across the whole file: unique names, known plans, distinct imported values.
fn check(reader: &node::Reader<'_>, desired: &Desired) -> Result<(), ManifestError> {
    let mut plan_names = BTreeSet::new();
    for p in &desired.plans {
        if !plan_names.insert(p.spec.name.as_str()) {
            return Err(reader.err(
                p.line,
                "name",
                format!("a plan named `{}` is defined twice", p.spec.name),
            ));
        }
    }
    let mut key_names = BTreeSet::new();
    let mut values = BTreeMap::new();
    for k in &desired.keys {
        if !key_names.insert(k.name.as_str()) {
            return Err(reader.err(
                k.line,
                "name",
                format!("a key named `{}` is defined twice", k.name),
            ));
        }
        if let Some(v) = &k.value
            && let Some(other) = values.insert(v.as_str(), k.name.as_str())
        {
            return Err(reader.err(
                k.line,
                "value",
                format!(
                    "key `{}` has the same value as key `{other}`; values must differ",
                    k.name
                ),
            ));
        }
    }
    for p in &desired.plans {
        for key in p.keys.keys() {
            if !key_names.contains(key.as_str()) {
                return Err(reader.err(
                    p.line,
                    "keys",
                    format!(
                        "plan `{}` lists key `{key}`, which the file does not define",
                        p.spec.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Where each part of a plan came from in the file, to name the line and field when the
/// plan as a whole fails validation.
pub struct FieldMap {
    /// (field path as quota-core names it, e.g. `quota.limit`; path in the file; line)
    entries: Vec<(String, String, usize)>,
    /// The plan itself: used when no entry matches.
    whole: (String, usize),
}

impl FieldMap {
    pub fn new(file_path: &str, line: usize) -> FieldMap {
        FieldMap {
            entries: Vec::new(),
            whole: (file_path.to_owned(), line),
        }
    }

    pub fn add(&mut self, core: &str, file_path: &str, line: usize) {
        self.entries
            .push((core.to_owned(), file_path.to_owned(), line));
    }

    /// The file path and line of the entry that best matches a quota-core field.
    fn locate(&self, core_field: &str) -> (&str, usize) {
        self.entries
            .iter()
            .filter(|(core, _, _)| {
                core_field == core
                    || core_field.starts_with(&format!("{core}."))
                    || core_field.starts_with(&format!("{core}["))
            })
            .max_by_key(|(core, _, _)| core.len())
            .map_or((self.whole.0.as_str(), self.whole.1), |(_, path, line)| {
                (path.as_str(), *line)
            })
    }
}

/// Validate a plan as the server will, and return it in canonical form.
pub fn canonical_plan(
    reader: &node::Reader<'_>,
    spec: v1::PlanSpec,
    fields: &FieldMap,
) -> Result<v1::PlanSpec, ManifestError> {
    match quota_core::PlanSpec::try_from(spec) {
        Ok(valid) => Ok(v1::PlanSpec::from(&valid)),
        Err(e) => {
            let (path, line) = fields.locate(e.field());
            Err(reader.err(line, path, e.to_string()))
        }
    }
}

/// Validate a key's fields and value as the server will.
pub fn check_key(
    reader: &node::Reader<'_>,
    key: &DesiredKey,
    fields: &FieldMap,
) -> Result<(), ManifestError> {
    let spec = v1::KeySpec {
        name: key.name.clone(),
        description: key.description.clone(),
        owner: key.owner.clone(),
        enabled: Some(key.enabled),
        expires_at: key.expires_at.unwrap_or(0),
        tags: key.tags.clone().unwrap_or_default(),
    };
    if let Err(e) = quota_core::KeySpec::try_from(spec) {
        let (path, line) = fields.locate(e.field());
        return Err(reader.err(line, path, e.to_string()));
    }
    if let Some(value) = &key.value
        && let Err(e) = quota_core::Secret::import(value)
    {
        let (path, line) = fields.locate("value");
        // The message names the length or the rule, never the value.
        return Err(reader.err(line, path, e.to_string()));
    }
    Ok(())
}
