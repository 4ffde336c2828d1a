//! What PostgreSQL can store of a body (no NUL character, numbers `numeric` can hold), checked
//! for the fields roomsync does not read while they are parsed, building no value for them: the
//! cost of a body follows what roomsync uses of it (docs/limits.md#the-callback).

use std::{borrow::Cow, collections::BTreeMap};

use serde::{
    Deserialize, Deserializer,
    de::{DeserializeSeed, MapAccess, SeqAccess, Visitor},
};
use serde_json::{Map, Value};

use super::{
    numeric,
    rejection::{Rejection, RejectionKind, key_in_path},
};

pub(super) fn check_storable(value: &Value, path: &str) -> Result<(), Rejection> {
    let nul = |p: &str| {
        Rejection::new(
            RejectionKind::NulCharacter,
            format!("{p} contains a NUL character"),
        )
    };
    match value {
        Value::String(s) if s.contains('\0') => Err(nul(path)),
        Value::Number(n) if !numeric::fits(&n.to_string()) => Err(Rejection::bounds(
            path,
            "is a number beyond what PostgreSQL's numeric type can store",
        )),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| check_storable(item, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().try_for_each(|(key, item)| {
            let key_text = key_in_path(key);
            let child = if path == "body" {
                key_text
            } else {
                format!("{path}.{key_text}")
            };
            if key.contains('\0') {
                Err(nul(&child))
            } else {
                check_storable(item, &child)
            }
        }),
        _ => Ok(()),
    }
}

/// The top-level fields roomsync reads; every other field is only checked while it is parsed.
pub(super) const KNOWN_FIELDS: &[&str] = &[
    "CallbackCommand",
    "EventTime",
    "Operator_Account",
    "RoomId",
    "MemberList_Account",
    "MemberCount",
    "Type",
    "Reason",
    "EventType",
    "EventCause",
    "MemberList",
    "RoomInfo",
    "ScheduleInviteeList_Account",
    "SeatList",
];

/// A body object: the known fields as values, and the first fault of the others.
pub(super) struct TopLevel {
    pub(super) known: Map<String, Value>,
    /// Faults of the other fields by key: the first in key order is reported, as a check of
    /// the whole object in key order would.
    unknown_faults: BTreeMap<String, Fault>,
}

impl TopLevel {
    pub(super) fn check_storable(&self) -> Result<(), Rejection> {
        let known = self.known.iter().find_map(|(key, value)| {
            check_storable(value, &key_in_path(key))
                .err()
                .map(|e| (key, e))
        });
        let unknown = self.unknown_faults.first_key_value();
        match (known, unknown) {
            (Some((k, error)), Some((u, _))) if k < u => Err(error),
            (_, Some((_, fault))) => Err(fault.rejection()),
            (Some((_, error)), None) => Err(error),
            (None, None) => Ok(()),
        }
    }
}

/// Parses the body as JSON (the same grammar and error messages as `serde_json::from_str`);
/// `None` when it is JSON but not an object. A field roomsync does not read costs its parsing
/// and no more: no value is built for it, whatever its size or shape.
pub(super) fn top_level(text: &str) -> Result<Option<TopLevel>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let top = TopLevelSeed.deserialize(&mut de)?;
    de.end()?;
    Ok(top)
}

/// The key serde_json's `arbitrary_precision` wraps a number that is not an i64 or u64 in.
pub(super) const NUMBER_TOKEN: &str = "$serde_json::private::Number";

pub(super) struct TopLevelSeed;

impl<'de> DeserializeSeed<'de> for TopLevelSeed {
    type Value = Option<TopLevel>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopLevelSeed {
    type Value = Option<TopLevel>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Storable.visit_seq(seq).map(|_| None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut top = TopLevel {
            known: Map::new(),
            unknown_faults: BTreeMap::new(),
        };
        let mut first = true;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if std::mem::take(&mut first) && key == NUMBER_TOKEN {
                map.next_value_seed(NumberText)?;
                return Ok(None);
            }
            if KNOWN_FIELDS.contains(&&*key) {
                let value: Value = map.next_value()?;
                top.known.insert(key.into_owned(), value);
                continue;
            }
            let fault = if key.contains('\0') {
                map.next_value_seed(Storable)?;
                Some(Fault::new(FaultKind::Nul))
            } else {
                map.next_value_seed(Storable)?
            };
            record(&mut top.unknown_faults, key, fault);
        }
        Ok(Some(top))
    }
}

/// A fault found under a key; a later value under the same key replaces the earlier one, as
/// it does in a parsed object.
pub(super) fn record(
    faults: &mut BTreeMap<String, Fault>,
    key: Cow<'_, str>,
    fault: Option<Fault>,
) {
    match fault {
        Some(mut fault) => {
            fault.steps.push(Step::Key(key.clone().into_owned()));
            faults.insert(key.into_owned(), fault);
        }
        None if !faults.is_empty() => {
            faults.remove(&*key);
        }
        None => {}
    }
}

/// What PostgreSQL cannot store, and where: `steps` from the value up to the top-level field.
#[derive(Debug)]
pub(super) struct Fault {
    kind: FaultKind,
    steps: Vec<Step>,
}

#[derive(Debug)]
pub(super) enum FaultKind {
    Nul,
    Number,
}

#[derive(Debug)]
pub(super) enum Step {
    Key(String),
    Index(usize),
}

impl Fault {
    fn new(kind: FaultKind) -> Self {
        Self {
            kind,
            steps: Vec::new(),
        }
    }

    /// The same message as [`check_storable`] gives for the same place.
    fn rejection(&self) -> Rejection {
        let mut path = String::new();
        for step in self.steps.iter().rev() {
            match step {
                Step::Key(key) if path.is_empty() => path.push_str(&key_in_path(key)),
                Step::Key(key) => {
                    path.push('.');
                    path.push_str(&key_in_path(key));
                }
                Step::Index(i) => path.push_str(&format!("[{i}]")),
            }
        }
        match self.kind {
            FaultKind::Nul => Rejection::new(
                RejectionKind::NulCharacter,
                format!("{path} contains a NUL character"),
            ),
            FaultKind::Number => Rejection::bounds(
                &path,
                "is a number beyond what PostgreSQL's numeric type can store",
            ),
        }
    }
}

/// Checks one JSON value for what PostgreSQL can store (NUL characters, numbers beyond
/// `numeric`) as it is parsed, building nothing: `Some` holds its first fault.
pub(super) struct Storable;

impl<'de> DeserializeSeed<'de> for Storable {
    type Value = Option<Fault>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Storable {
    type Value = Option<Fault>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    // An i64 or u64 always fits `numeric`.
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, n: f64) -> Result<Self::Value, E> {
        Ok((!numeric::fits(&n.to_string())).then(|| Fault::new(FaultKind::Number)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(s.contains('\0').then(|| Fault::new(FaultKind::Nul)))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut first: Option<Fault> = None;
        let mut i = 0;
        while let Some(fault) = seq.next_element_seed(Storable)? {
            if let (None, Some(mut fault)) = (&first, fault) {
                fault.steps.push(Step::Index(i));
                first = Some(fault);
            }
            i += 1;
        }
        Ok(first)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut faults = BTreeMap::new();
        let mut first = true;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if std::mem::take(&mut first) && key == NUMBER_TOKEN {
                let text = map.next_value_seed(NumberText)?;
                return Ok((!numeric::fits(&text)).then(|| Fault::new(FaultKind::Number)));
            }
            let fault = if key.contains('\0') {
                map.next_value_seed(Storable)?;
                Some(Fault::new(FaultKind::Nul))
            } else {
                map.next_value_seed(Storable)?
            };
            record(&mut faults, key, fault);
        }
        Ok(faults.into_values().next())
    }
}

/// An object key, borrowed from the body when it has no escapes.
pub(super) struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(s))
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s))
    }
}

/// The text of a number serde_json hands over under [`NUMBER_TOKEN`].
pub(super) struct NumberText;

impl<'de> DeserializeSeed<'de> for NumberText {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        String::deserialize(d)
    }
}
