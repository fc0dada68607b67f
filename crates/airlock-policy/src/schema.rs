//! Tool input schemas: compiling a tool's JSON Schema (draft 2020-12) once, validating each
//! call's arguments against it, and reading which arguments the schema marks sensitive.
//!
//! A compiled schema is bounded (64 KiB, 32 levels), self-contained (a `$ref` that leaves the
//! schema is refused and nothing is ever fetched: the crate is built without jsonschema's
//! resolvers and the validator is also set offline), closed (objects reject unknown fields
//! unless the schema says otherwise) and safe on hostile input (`pattern` and
//! `patternProperties` run on the linear-time `regex` engine, so lookaround and backreferences
//! are refused when the schema is compiled rather than backtracking when it is used).

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Map, Value};

/// The largest schema accepted, in bytes of compact JSON.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;
/// The deepest nesting of JSON objects and arrays accepted in a schema.
pub const MAX_SCHEMA_DEPTH: usize = 32;
/// The annotation that marks a property as sensitive: `"x-airlock-sensitive": "recipient"`.
pub const SENSITIVE_KEYWORD: &str = "x-airlock-sensitive";
/// The sensitive kinds Airlock knows by name; any other lowercase word is accepted too.
pub const KNOWN_SENSITIVE_KINDS: [&str; 9] = [
    "recipient",
    "url",
    "account",
    "amount",
    "destination",
    "invitee",
    "file_share",
    "content",
    "identifier",
];
/// The most violations [`ArgumentSchema::validate`] reports one by one; the rest are counted.
pub const MAX_VIOLATIONS: usize = 100;

/// The dialect every tool schema is read as.
const DIALECT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";
/// The most subschemas the sensitive-argument walk visits, following local `$ref`s; bounds
/// the work a schema whose references fan out can cause.
const MAX_VISITS: usize = 10_000;
/// The most `$ref`s followed inside one another by the sensitive-argument walk.
const MAX_REF_HOPS: usize = 16;
const MAX_KIND_LEN: usize = 32;
/// Placeholder for argument values in violation messages: arguments may hold personal data
/// and violations are shown to agents and written to the audit log.
const MASK: &str = "value";

/// A tool input schema that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// The schema is larger than [`MAX_SCHEMA_BYTES`].
    #[error("the schema is {bytes} bytes as compact JSON; the limit is {MAX_SCHEMA_BYTES}")]
    TooLarge {
        /// Its size as compact JSON.
        bytes: usize,
    },
    /// The schema nests objects and arrays deeper than [`MAX_SCHEMA_DEPTH`].
    #[error("the schema nests deeper than {MAX_SCHEMA_DEPTH} levels")]
    TooDeep,
    /// The top level is not an object schema with `"type": "object"`.
    #[error("a tool's input schema must be a JSON object with `\"type\": \"object\"` at the top level")]
    NotAnObject,
    /// A `$ref` (or `$dynamicRef`) points outside the schema.
    #[error(
        "`{reference}` at `{pointer}` refers outside the schema; only references starting with `#` are allowed, and nothing is ever fetched"
    )]
    NonLocalRef {
        /// Where the reference is, as a JSON pointer into the schema.
        pointer: String,
        /// The reference, truncated.
        reference: String,
    },
    /// The schema declares a dialect other than 2020-12, or declares one below the top level.
    #[error(
        "`$schema` `{value}` at `{pointer}` is not supported; tool schemas are JSON Schema 2020-12, declared at most once, at the top level"
    )]
    UnsupportedDialect {
        /// Where the declaration is.
        pointer: String,
        /// The declared dialect, truncated.
        value: String,
    },
    /// A subschema sets `$id`, which would make `#` references mean something else there.
    #[error(
        "`$id` at `{pointer}` is not supported below the top level; use `$defs` and `#/$defs/…` references"
    )]
    EmbeddedId {
        /// Where the `$id` is.
        pointer: String,
    },
    /// An `x-airlock-sensitive` annotation is malformed or misplaced.
    #[error("`{SENSITIVE_KEYWORD}` at `{pointer}`: {reason}")]
    Sensitive {
        /// Where the annotation is.
        pointer: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Local references fan out too far to analyse.
    #[error("the schema's references expand to more than {MAX_VISITS} subschemas")]
    TooComplex,
    /// The schema is not valid JSON Schema 2020-12, or a pattern cannot run on the linear-time
    /// regex engine.
    #[error("invalid schema at `{pointer}`: {message}")]
    Invalid {
        /// Where the problem is, as a JSON pointer into the schema.
        pointer: String,
        /// What the validator said.
        message: String,
    },
}

/// One way the arguments fail their schema.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Violation {
    /// Where in the arguments, as a JSON pointer (`""` for the arguments as a whole).
    pub pointer: String,
    /// What is wrong, with argument values masked.
    pub message: String,
}

/// An argument the schema marks sensitive with `x-airlock-sensitive`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct SensitiveArgument {
    /// The property's JSON pointer in the arguments (`/to`, `/payment/iban`). An annotation
    /// below an array's `items` or a map's `additionalProperties` is reported at the nearest
    /// named property that holds it (`/recipients`): every value under that pointer is sensitive.
    pub pointer: String,
    /// What kind of value it is: one of [`KNOWN_SENSITIVE_KINDS`] or another lowercase word.
    pub kind: String,
}

/// A compiled tool input schema.
#[derive(Debug, Clone)]
pub struct ArgumentSchema {
    json: Value,
    validator: Arc<jsonschema::Validator>,
    sensitive: Vec<SensitiveArgument>,
}

impl ArgumentSchema {
    /// Compiles a tool's input schema (JSON Schema 2020-12).
    ///
    /// Refuses schemas over 64 KiB serialized or nested deeper than 32; a top level that is not
    /// `"type": "object"`; any `$ref` or `$dynamicRef` not starting with `#` (remote references
    /// are never fetched); a `$schema` other than 2020-12; `$id` below the top level; malformed
    /// `x-airlock-sensitive` annotations; and schemas the validator finds invalid, including
    /// patterns the linear-time regex engine cannot run (lookaround, backreferences).
    ///
    /// Objects that do not say otherwise are closed, so unknown argument fields are rejected:
    /// wherever a value's schema has `properties` and neither `additionalProperties` nor
    /// `unevaluatedProperties`, `"additionalProperties": false` is injected. Where a value's
    /// properties come (also) from `allOf`/`anyOf`/`oneOf`/`if`/`then`/`else`/
    /// `dependentSchemas` branches or local `$ref`s, `"unevaluatedProperties": false` is
    /// injected on the value's schema instead, and the branches and `$defs` entries themselves
    /// are left alone: closing a branch would reject its siblings' properties (or invert a
    /// `not`). A schema with no named properties anywhere (`{"type": "object"}`) stays open.
    pub fn compile(schema: &Value) -> Result<Self, SchemaError> {
        if exceeds_depth(schema, MAX_SCHEMA_DEPTH) {
            return Err(SchemaError::TooDeep);
        }
        let bytes = serde_json::to_vec(schema).map_or(usize::MAX, |bytes| bytes.len());
        if bytes > MAX_SCHEMA_BYTES {
            return Err(SchemaError::TooLarge { bytes });
        }
        let is_object_schema = schema
            .as_object()
            .and_then(|object| object.get("type"))
            .is_some_and(|kind| kind.as_str() == Some("object"));
        if !is_object_schema {
            return Err(SchemaError::NotAnObject);
        }

        let mut planner =
            Planner { root: schema, closings: Vec::new(), object_shaped: std::collections::HashMap::new() };
        planner.check(schema, "", Place::Top)?;
        let mut json = schema.clone();
        for (pointer, keyword) in planner.closings {
            if let Some(object) = json.pointer_mut(&pointer).and_then(Value::as_object_mut) {
                object.insert(keyword.to_owned(), Value::Bool(false));
            }
        }

        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .with_pattern_options(jsonschema::PatternOptions::regex())
            .should_validate_formats(true)
            .offline()
            .build(&json)
            .map_err(|error| invalid(&error))?;

        let mut walk = SensitiveWalk { root: &json, found: BTreeSet::new(), visits: 0, refs: Vec::new() };
        walk.visit(&json, "", "", true)?;
        let sensitive = walk.found.into_iter().collect();

        Ok(Self { validator: Arc::new(validator), sensitive, json })
    }

    /// The schema as stored (with the injected `additionalProperties` / `unevaluatedProperties`),
    /// to persist and return. Compiling it again gives the same schema.
    #[must_use]
    pub fn as_json(&self) -> &Value {
        &self.json
    }

    /// Validates arguments; on failure every violation with its JSON pointer (up to
    /// [`MAX_VIOLATIONS`], then one more saying how many were left out). Messages mask argument
    /// values, so they can be shown and audited.
    pub fn validate(&self, arguments: &Value) -> Result<(), Vec<Violation>> {
        let mut violations = Vec::new();
        let mut left_out = 0_usize;
        for error in self.validator.iter_errors(arguments) {
            if violations.len() < MAX_VIOLATIONS {
                violations.push(Violation {
                    pointer: error.instance_path().to_string(),
                    message: error.masked_with(MASK).to_string(),
                });
            } else {
                left_out = left_out.saturating_add(1);
            }
        }
        if left_out > 0 {
            violations.push(Violation {
                pointer: String::new(),
                message: format!("{left_out} more violations not listed"),
            });
        }
        if violations.is_empty() { Ok(()) } else { Err(violations) }
    }

    /// Arguments marked sensitive with `"x-airlock-sensitive": "<kind>"` on a property, as
    /// (JSON pointer of the property in the arguments, kind), sorted by pointer. Nested objects
    /// are included, as are properties reached through local `$ref`s and `allOf`/`anyOf`/
    /// `oneOf`/`if`/`then`/`else` branches.
    #[must_use]
    pub fn sensitive_arguments(&self) -> &[SensitiveArgument] {
        &self.sensitive
    }
}

fn invalid(error: &jsonschema::ValidationError<'_>) -> SchemaError {
    // Meta-schema violations locate the problem in the instance (the schema being checked);
    // compile errors such as a pattern the engine refuses locate it in the schema path.
    let pointer = if error.instance_path().as_str().is_empty() {
        error.schema_path().to_string()
    } else {
        error.instance_path().to_string()
    };
    let message = match error.kind() {
        jsonschema::error::ValidationErrorKind::Format { format } if format == "regex" => {
            format!("{error}: patterns run on a linear-time engine without lookaround or backreferences")
        }
        _ => error.to_string(),
    };
    SchemaError::Invalid { pointer, message: truncate(&message, 300) }
}

fn truncate(text: &str, max_chars: usize) -> String {
    let mut out: String = text.chars().take(max_chars).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

/// Whether `value` nests objects and arrays deeper than `limit`; recursion stops at the limit.
fn exceeds_depth(value: &Value, limit: usize) -> bool {
    let children: Box<dyn Iterator<Item = &Value>> = match value {
        Value::Object(object) => Box::new(object.values()),
        Value::Array(array) => Box::new(array.iter()),
        _ => return false,
    };
    match limit.checked_sub(1) {
        None => true,
        Some(rest) => children.into_iter().any(|child| exceeds_depth(child, rest)),
    }
}

/// Appends one reference token to a JSON pointer, escaped per RFC 6901.
fn child(pointer: &str, token: &str) -> String {
    format!("{pointer}/{}", token.replace('~', "~0").replace('/', "~1"))
}

/// Keywords whose value is one subschema.
const SINGLE_SUBSCHEMA: [&str; 12] = [
    "additionalProperties",
    "propertyNames",
    "items",
    "contains",
    "not",
    "if",
    "then",
    "else",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contentSchema",
    "additionalItems",
];
/// Keywords whose value is an array of subschemas.
const SUBSCHEMA_ARRAY: [&str; 4] = ["allOf", "anyOf", "oneOf", "prefixItems"];
/// Keywords whose value is an object mapping names to subschemas.
const SUBSCHEMA_MAP: [&str; 5] =
    ["properties", "patternProperties", "$defs", "definitions", "dependentSchemas"];

/// Every subschema directly inside `object`, with the keyword holding it and its JSON pointer.
fn subschemas<'a>(object: &'a Map<String, Value>, pointer: &str) -> Vec<(&'static str, String, &'a Value)> {
    let mut found = Vec::new();
    for keyword in SINGLE_SUBSCHEMA {
        let at = child(pointer, keyword);
        match object.get(keyword) {
            // `items` as an array is the pre-2020 tuple form; the validator rejects it, but
            // checking its members too keeps the reference rules airtight.
            Some(Value::Array(items)) => {
                found.extend(items.iter().enumerate().map(|(i, s)| (keyword, child(&at, &i.to_string()), s)));
            }
            Some(schema) => found.push((keyword, at, schema)),
            None => {}
        }
    }
    for keyword in SUBSCHEMA_ARRAY {
        if let Some(Value::Array(items)) = object.get(keyword) {
            let at = child(pointer, keyword);
            found.extend(items.iter().enumerate().map(|(i, s)| (keyword, child(&at, &i.to_string()), s)));
        }
    }
    for keyword in SUBSCHEMA_MAP {
        if let Some(Value::Object(map)) = object.get(keyword) {
            let at = child(pointer, keyword);
            found.extend(map.iter().map(|(name, s)| (keyword, child(&at, name), s)));
        }
    }
    found
}

/// What a subschema describes, which decides whether it may be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// The arguments as a whole.
    Top,
    /// A value inside the arguments (a property, an array item, a map entry).
    Value,
    /// Another view of its parent's value (`allOf`, `anyOf`, `oneOf`, `if`, `then`, `else`,
    /// `dependentSchemas`, `not`): closing it would hide its siblings' properties, or invert
    /// the meaning of a `not`. The nearest enclosing value is closed instead.
    Branch,
    /// A `$defs` entry: closed where it is referenced, which also works when the reference
    /// sits beside more `properties`.
    Definition,
}

fn place_of(keyword: &str) -> Place {
    match keyword {
        "allOf" | "anyOf" | "oneOf" | "if" | "then" | "else" | "dependentSchemas" | "not" => Place::Branch,
        "$defs" | "definitions" => Place::Definition,
        _ => Place::Value,
    }
}

/// Branch keywords whose properties count as the parent's (everything but `not`).
const CONTRIBUTING_BRANCHES: [&str; 7] =
    ["allOf", "anyOf", "oneOf", "if", "then", "else", "dependentSchemas"];
const REFERENCES: [&str; 2] = ["$ref", "$dynamicRef"];
/// How many references deep the object-shape analysis looks before assuming an object.
const MAX_SHAPE_DEPTH: usize = 64;

/// Checks every subschema and plans which ones to close, on the schema as written.
struct Planner<'a> {
    root: &'a Value,
    /// Where to insert which keyword with the value `false`.
    closings: Vec<(String, &'static str)>,
    /// Whether the subschema at a pointer describes an object with named properties.
    object_shaped: std::collections::HashMap<String, bool>,
}

impl<'a> Planner<'a> {
    /// Checks the reference, dialect and annotation rules on `schema` and everything in it.
    ///
    /// A value schema that does not choose for itself (no `additionalProperties`, no
    /// `unevaluatedProperties`) is closed: with `additionalProperties: false` when it has
    /// `properties` and no branches or references, with `unevaluatedProperties: false` (which
    /// sees the properties its branches and references declare) when its shape comes from
    /// those. Schemas without named properties anywhere (`{"type": "object"}`, a free-form map)
    /// stay open.
    fn check(&mut self, schema: &'a Value, pointer: &str, place: Place) -> Result<(), SchemaError> {
        let Value::Object(object) = schema else {
            // Boolean schemas have nothing to check; anything else the validator rejects.
            return Ok(());
        };
        for keyword in ["$ref", "$dynamicRef", "$recursiveRef"] {
            if let Some(Value::String(reference)) = object.get(keyword)
                && !reference.starts_with('#')
            {
                return Err(SchemaError::NonLocalRef {
                    pointer: child(pointer, keyword),
                    reference: truncate(reference, 200),
                });
            }
        }
        if let Some(dialect) = object.get("$schema") {
            let is_2020_12 =
                dialect.as_str().is_some_and(|uri| uri.strip_suffix('#').unwrap_or(uri) == DIALECT_2020_12);
            if place != Place::Top || !is_2020_12 {
                let value = dialect.as_str().map_or_else(|| dialect.to_string(), str::to_owned);
                return Err(SchemaError::UnsupportedDialect {
                    pointer: child(pointer, "$schema"),
                    value: truncate(&value, 200),
                });
            }
        }
        if place != Place::Top && object.contains_key("$id") {
            return Err(SchemaError::EmbeddedId { pointer: child(pointer, "$id") });
        }
        if let Some(kind) = object.get(SENSITIVE_KEYWORD) {
            let pointer = child(pointer, SENSITIVE_KEYWORD);
            let Some(kind) = kind.as_str() else {
                return Err(SchemaError::Sensitive { pointer, reason: "the kind must be a string" });
            };
            if !is_kind(kind) {
                return Err(SchemaError::Sensitive {
                    pointer,
                    reason: "the kind must be a lowercase word of at most 32 letters, digits or `_`, such as `recipient`",
                });
            }
        }

        let chooses =
            object.contains_key("additionalProperties") || object.contains_key("unevaluatedProperties");
        if matches!(place, Place::Top | Place::Value) && !chooses {
            let composed = CONTRIBUTING_BRANCHES
                .iter()
                .chain(&["not"])
                .chain(&REFERENCES)
                .any(|k| object.contains_key(*k));
            if !composed && object.contains_key("properties") {
                self.closings.push((pointer.to_owned(), "additionalProperties"));
            } else if composed && self.is_object_shaped(schema, pointer, 0) {
                self.closings.push((pointer.to_owned(), "unevaluatedProperties"));
            }
        }

        for (keyword, at, subschema) in subschemas(object, pointer) {
            self.check(subschema, &at, place_of(keyword))?;
        }
        Ok(())
    }

    /// Whether `schema` (at `pointer`) declares named properties itself, in a contributing
    /// branch, or through a local reference. Deep or cyclic reference chains count as objects,
    /// so the doubt falls on the closed side.
    fn is_object_shaped(&mut self, schema: &'a Value, pointer: &str, depth: usize) -> bool {
        if let Some(&known) = self.object_shaped.get(pointer) {
            return known;
        }
        if depth > MAX_SHAPE_DEPTH {
            return true;
        }
        let Value::Object(object) = schema else { return false };
        // Provisional answer while this schema is being looked at, for cycles.
        self.object_shaped.insert(pointer.to_owned(), false);
        let mut shaped = object.contains_key("properties");
        if !shaped {
            for (keyword, at, subschema) in subschemas(object, pointer) {
                if CONTRIBUTING_BRANCHES.contains(&keyword)
                    && self.is_object_shaped(subschema, &at, depth + 1)
                {
                    shaped = true;
                    break;
                }
            }
        }
        if !shaped {
            for keyword in REFERENCES {
                let target =
                    object.get(keyword).and_then(Value::as_str).and_then(|r| resolve_local(self.root, r));
                if let Some((at, target)) = target
                    && self.is_object_shaped(target, &at, depth + 1)
                {
                    shaped = true;
                    break;
                }
            }
        }
        self.object_shaped.insert(pointer.to_owned(), shaped);
        shaped
    }
}

fn is_kind(kind: &str) -> bool {
    (1..=MAX_KIND_LEN).contains(&kind.len())
        && kind.starts_with(|c: char| c.is_ascii_lowercase())
        && kind.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
}

/// Walks the schema along the shape of the arguments, collecting sensitive properties.
struct SensitiveWalk<'a> {
    root: &'a Value,
    found: BTreeSet<SensitiveArgument>,
    visits: usize,
    /// The references being followed, innermost last, so a recursive schema stops.
    refs: Vec<&'a str>,
}

impl<'a> SensitiveWalk<'a> {
    /// Visits `schema`, which describes the argument value at `instance` (a JSON pointer into
    /// the arguments) and sits at `at` (a JSON pointer into the schema). Below an array item or
    /// an unnamed map entry (`addressable` false) properties no longer extend the pointer: they
    /// are reported at the nearest named property that holds them.
    fn visit(
        &mut self,
        schema: &'a Value,
        instance: &str,
        at: &str,
        addressable: bool,
    ) -> Result<(), SchemaError> {
        self.visits = self.visits.saturating_add(1);
        if self.visits > MAX_VISITS {
            return Err(SchemaError::TooComplex);
        }
        let Value::Object(object) = schema else { return Ok(()) };

        if let Some(kind) = object.get(SENSITIVE_KEYWORD).and_then(Value::as_str) {
            if instance.is_empty() {
                return Err(SchemaError::Sensitive {
                    pointer: child(at, SENSITIVE_KEYWORD),
                    reason: "the annotation must sit on a named property, not on the arguments as a whole",
                });
            }
            self.found.insert(SensitiveArgument { pointer: instance.to_owned(), kind: kind.to_owned() });
        }

        if let Some(Value::Object(properties)) = object.get("properties") {
            for (name, subschema) in properties {
                let at = child(&child(at, "properties"), name);
                if addressable {
                    self.visit(subschema, &child(instance, name), &at, true)?;
                } else {
                    self.visit(subschema, instance, &at, false)?;
                }
            }
        }
        // Everything else that applies to this value or to values inside it; values inside an
        // array or an unnamed map entry are reported at this (the nearest named) location.
        // (`properties` is handled above; definitions apply only where referenced; property
        // names are not argument values.)
        for (keyword, sub_at, subschema) in subschemas(object, at) {
            match place_of(keyword) {
                _ if matches!(keyword, "properties" | "propertyNames") => {}
                Place::Definition => {}
                Place::Branch => self.visit(subschema, instance, &sub_at, addressable)?,
                Place::Value | Place::Top => self.visit(subschema, instance, &sub_at, false)?,
            }
        }
        for keyword in ["$ref", "$dynamicRef"] {
            let Some(reference) = object.get(keyword).and_then(Value::as_str) else { continue };
            if self.refs.contains(&reference) || self.refs.len() >= MAX_REF_HOPS {
                continue;
            }
            if let Some((target_at, target)) = resolve_local(self.root, reference) {
                self.refs.push(reference);
                let result = self.visit(target, instance, &target_at, addressable);
                self.refs.pop();
                result?;
            }
        }
        Ok(())
    }
}

/// Resolves a local reference: `#`, `#/json/pointer` (percent-encoded) or `#anchor`.
fn resolve_local<'a>(root: &'a Value, reference: &str) -> Option<(String, &'a Value)> {
    let fragment = reference.strip_prefix('#')?;
    if fragment.is_empty() {
        return Some((String::new(), root));
    }
    if fragment.starts_with('/') {
        let pointer = percent_decode(fragment)?;
        return root.pointer(&pointer).map(|target| (pointer, target));
    }
    find_anchor(root, fragment, String::new(), MAX_SCHEMA_DEPTH)
}

fn find_anchor<'a>(value: &'a Value, anchor: &str, at: String, depth: usize) -> Option<(String, &'a Value)> {
    let depth = depth.checked_sub(1)?;
    match value {
        Value::Object(object) => {
            let named = ["$anchor", "$dynamicAnchor"]
                .iter()
                .any(|keyword| object.get(*keyword).and_then(Value::as_str) == Some(anchor));
            if named {
                return Some((at, value));
            }
            object
                .iter()
                .find_map(|(key, child_value)| find_anchor(child_value, anchor, child(&at, key), depth))
        }
        Value::Array(array) => array
            .iter()
            .enumerate()
            .find_map(|(i, child_value)| find_anchor(child_value, anchor, child(&at, &i.to_string()), depth)),
        _ => None,
    }
}

/// Decodes `%XX` escapes in a URI fragment; `None` if an escape or the result is malformed.
fn percent_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'%' {
            let (hex, after) = tail.split_at_checked(2)?;
            let hex = std::str::from_utf8(hex).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = after;
        } else {
            bytes.push(first);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
#[path = "schema_tests.rs"]
mod tests;
