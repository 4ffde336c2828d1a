//! What PostgreSQL can store of a body (no NUL character, numbers `numeric` can hold) and the
//! bounds on what roomsync builds of it, checked while it is parsed: the fields roomsync reads
//! become values within a budget, the others are skipped and scanned, building nothing. So the
//! cost of a body follows what roomsync uses of it (docs/limits.md#the-callback).

use std::{borrow::Cow, collections::BTreeMap};

use serde::{
    Deserialize, Deserializer,
    de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor},
};
use serde_json::{Map, Number, Value, value::RawValue};

use super::{
    limits::{MAX_LIST_ENTRIES, MAX_READ_VALUES},
    numeric,
    rejection::{Rejection, RejectionKind, key_in_path},
};

/// The whole-value check the parse-time checks must agree with (see the tests in parse/mod.rs).
#[cfg(test)]
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

/// A body object: the known fields as values, and the first fault of each field.
pub(super) struct TopLevel {
    pub(super) known: Map<String, Value>,
    /// Faults by key: the first in key order is reported, as a check of the whole object in
    /// key order would.
    faults: BTreeMap<String, Fault>,
}

impl TopLevel {
    pub(super) fn check_storable(&self) -> Result<(), Rejection> {
        match self.faults.first_key_value() {
            Some((_, fault)) => Err(fault.rejection()),
            None => Ok(()),
        }
    }
}

/// Parses the body as JSON (the same grammar and error messages as `serde_json::from_str`);
/// `None` when it is JSON but not an object. A field roomsync does not read costs its parsing
/// and a scan, no more: no value is built for it, whatever its size or shape.
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
            faults: BTreeMap::new(),
        };
        let mut budget = MAX_READ_VALUES;
        let mut first = true;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if std::mem::take(&mut first) && key == NUMBER_TOKEN {
                map.next_value_seed(NumberText)?;
                return Ok(None);
            }
            let fault = if KNOWN_FIELDS.contains(&&*key) {
                match map.next_value_seed(Bounded { left: &mut budget })? {
                    Ok(value) => {
                        top.known.insert(key.clone().into_owned(), value);
                        None
                    }
                    Err(fault) => {
                        top.known.remove(&*key);
                        Some(fault)
                    }
                }
            } else if key.contains('\0') {
                map.next_value::<&RawValue>()?;
                Some(Fault::new(FaultKind::Nul))
            } else {
                scanned(map.next_value::<&RawValue>()?).map_err(A::Error::custom)?
            };
            record(&mut top.faults, key, fault);
        }
        Ok(Some(top))
    }
}

/// A value roomsync does not read, skipped by the parser without building anything: the exact
/// check runs only when a scan of its text finds something that may be a fault.
fn scanned(raw: &RawValue) -> Result<Option<Fault>, serde_json::Error> {
    let text = raw.get();
    if !may_be_unstorable(text.as_bytes()) {
        return Ok(None);
    }
    Storable.deserialize(&mut serde_json::Deserializer::from_str(text))
}

/// Whether the text of one JSON value may hold what PostgreSQL cannot store: a `\u0000`
/// escape (a raw NUL is not valid JSON), or a number `numeric` may not hold, which needs an
/// exponent or over 16,383 digits in a row. A cheap over-approximation (it does not tell
/// strings from numbers) that searches rather than walks: what it finds is checked exactly by
/// [`Storable`].
fn may_be_unstorable(text: &[u8]) -> bool {
    const LONG_RUN: usize = 16_000;
    let is_digit = |i: usize| text[i].is_ascii_digit();
    if memchr::memmem::find(text, br"\u0000").is_some() {
        return true;
    }
    if memchr::memchr2_iter(b'e', b'E', text).any(|i| i > 0 && is_digit(i - 1)) {
        return true;
    }
    // A run of more than LONG_RUN digits holds two digits LONG_RUN / 2 apart: look at every
    // such pair of positions, and walk the span between them only when both are digits.
    let stride = LONG_RUN / 2;
    (stride..text.len()).step_by(stride).any(|end| {
        is_digit(end - stride) && is_digit(end) && {
            let (start, mut last) = (end - stride, end);
            let mut first = start;
            while first > 0 && is_digit(first - 1) {
                first -= 1;
            }
            while last + 1 < text.len() && is_digit(last + 1) {
                last += 1;
            }
            text[start..=end].iter().all(u8::is_ascii_digit) && last + 1 - first > LONG_RUN
        }
    })
}

/// A fault found under a key. A later value under the same key does not clear it: jsonb reads
/// (and refuses) every value, also one a later duplicate hides, and a bound is a bound. The
/// first fault under a key, in text order, is the one named.
pub(super) fn record(
    faults: &mut BTreeMap<String, Fault>,
    key: Cow<'_, str>,
    fault: Option<Fault>,
) {
    if let Some(mut fault) = fault
        && !faults.contains_key(&*key)
    {
        fault.steps.push(Step::Key(key.clone().into_owned()));
        faults.insert(key.into_owned(), fault);
    }
}

/// An escape PostgreSQL's jsonb refuses in any string, key or value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EscapeFault {
    /// `\u0000`: text cannot hold a NUL character.
    Nul,
    /// A UTF-16 surrogate escape that is not half of a pair (`\ud800`, `\udc00`,
    /// `\ud800\u0041`): no character at all.
    LoneSurrogate,
}

/// The first escape of `text` that jsonb refuses, and its byte offset. In valid JSON every
/// backslash is inside a string, so one search for `\u` finds every escape, in read fields,
/// skipped ones, keys and values a later duplicate hides alike, building nothing; a `\u`
/// after an odd run of backslashes is text, not an escape.
pub(super) fn unstorable_escape(text: &[u8]) -> Option<(usize, EscapeFault)> {
    let unit = |at: usize| -> Option<u16> {
        let digits = text.get(at..at + 4)?;
        digits.iter().try_fold(0u16, |n, d| {
            Some(n << 4 | u16::from((*d as char).to_digit(16)? as u8))
        })
    };
    let mut paired_until = 0;
    for at in memchr::memmem::find_iter(text, br"\u") {
        if at < paired_until {
            continue;
        }
        // Each `\u` hit ends its run of backslashes, so every byte is walked back over once.
        let escaped = text[..at].iter().rev().take_while(|b| **b == b'\\').count() % 2 == 1;
        // Not four hex digits: not JSON, which the parser reports.
        let Some(n) = unit(at + 2).filter(|_| !escaped) else {
            continue;
        };
        match n {
            0 => return Some((at, EscapeFault::Nul)),
            0xD800..=0xDBFF
                if text.get(at + 6..at + 8) == Some(&br"\u"[..])
                    && unit(at + 8).is_some_and(|low| (0xDC00..=0xDFFF).contains(&low)) =>
            {
                paired_until = at + 12;
            }
            0xD800..=0xDFFF => return Some((at, EscapeFault::LoneSurrogate)),
            _ => {}
        }
    }
    None
}

/// What [`unstorable_escape`] found, as the answer names it.
pub(super) fn escape_rejection(text: &[u8], at: usize, fault: EscapeFault) -> Rejection {
    let escape = String::from_utf8_lossy(&text[at..(at + 6).min(text.len())]).into_owned();
    match fault {
        EscapeFault::Nul => Rejection::new(
            RejectionKind::NulCharacter,
            format!("body contains a NUL character ({escape} at byte {at})"),
        ),
        EscapeFault::LoneSurrogate => Rejection::new(
            RejectionKind::LoneSurrogate,
            format!(
                "body contains a lone surrogate escape ({escape} at byte {at}), which PostgreSQL cannot store"
            ),
        ),
    }
}

/// [`top_level`], with a lone surrogate in a string serde_json decodes (a read field, a key)
/// named as the same fault as anywhere else, unless the text is not JSON for another reason.
pub(super) fn storable_top_level(text: &str) -> Result<Option<TopLevel>, Rejection> {
    top_level(text).map_err(|e| {
        match unstorable_escape(text.as_bytes()) {
            // Only a failed parse pays for this second pass, which decodes no string.
            Some((at, fault)) if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() => {
                escape_rejection(text.as_bytes(), at, fault)
            }
            _ => Rejection::new(RejectionKind::NotJson, format!("body is not JSON: {e}")),
        }
    })
}

/// The escapes jsonb refuses, anywhere in the body.
pub(super) fn check_escapes(text: &str) -> Result<(), Rejection> {
    match unstorable_escape(text.as_bytes()) {
        Some((at, fault)) => Err(escape_rejection(text.as_bytes(), at, fault)),
        None => Ok(()),
    }
}

/// What PostgreSQL cannot store, or a bound passed, and where: `steps` from the value up to
/// the top-level field.
#[derive(Debug)]
pub(super) struct Fault {
    kind: FaultKind,
    steps: Vec<Step>,
}

#[derive(Debug)]
pub(super) enum FaultKind {
    Nul,
    Number,
    /// A list of more than [`MAX_LIST_ENTRIES`] entries.
    Entries,
    /// More than [`MAX_READ_VALUES`] values in the fields roomsync reads.
    Values,
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

    /// The same message as the whole-value check gives for the same place.
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
            FaultKind::Entries => {
                Rejection::bounds(&path, &format!("has more than {MAX_LIST_ENTRIES} entries"))
            }
            FaultKind::Values => Rejection::bounds(
                "body",
                &format!("has more than {MAX_READ_VALUES} values in the fields roomsync reads"),
            ),
        }
    }
}

fn number_fault(text: &str) -> Option<Fault> {
    (!numeric::fits(text)).then(|| Fault::new(FaultKind::Number))
}

/// Builds a value of a field roomsync reads, as `Value`'s own parsing would, checking as it
/// goes what PostgreSQL can store, the length of lists and the body's budget of values. On a
/// fault the rest of the value is only checked as JSON: nothing more is built.
struct Bounded<'b> {
    left: &'b mut usize,
}

impl Bounded<'_> {
    /// One value more, if the budget allows.
    fn take(&mut self) -> Result<(), Fault> {
        match self.left.checked_sub(1) {
            Some(left) => {
                *self.left = left;
                Ok(())
            }
            None => Err(Fault::new(FaultKind::Values)),
        }
    }

    fn scalar(mut self, value: impl FnOnce() -> Result<Value, Fault>) -> Result<Value, Fault> {
        self.take()?;
        value()
    }
}

impl<'de> DeserializeSeed<'de> for Bounded<'_> {
    type Value = Result<Value, Fault>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<&RawValue>()?.is_some() {}
    Ok(())
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_key_seed(KeySeed)?.is_some() {
        map.next_value::<&RawValue>()?;
    }
    Ok(())
}

impl<'de> Visitor<'de> for Bounded<'_> {
    type Value = Result<Value, Fault>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
        Ok(self.scalar(|| Ok(Value::Bool(b))))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
        Ok(self.scalar(|| Ok(Value::from(n))))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
        Ok(self.scalar(|| Ok(Value::from(n))))
    }
    fn visit_f64<E>(self, n: f64) -> Result<Self::Value, E> {
        Ok(self.scalar(|| match number_fault(&n.to_string()) {
            Some(fault) => Err(fault),
            None => Ok(Number::from_f64(n).map_or(Value::Null, Value::Number)),
        }))
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(self.scalar(|| match s.contains('\0') {
            true => Err(Fault::new(FaultKind::Nul)),
            false => Ok(Value::String(s.to_owned())),
        }))
    }
    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(self.scalar(|| match s.contains('\0') {
            true => Err(Fault::new(FaultKind::Nul)),
            false => Ok(Value::String(s)),
        }))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(self.scalar(|| Ok(Value::Null)))
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Self::Value, A::Error> {
        if let Err(fault) = self.take() {
            skip_seq(seq)?;
            return Ok(Err(fault));
        }
        let mut items = Vec::new();
        loop {
            if items.len() == MAX_LIST_ENTRIES {
                if seq.next_element::<&RawValue>()?.is_none() {
                    break;
                }
                skip_seq(seq)?;
                return Ok(Err(Fault::new(FaultKind::Entries)));
            }
            match seq.next_element_seed(Bounded {
                left: &mut *self.left,
            })? {
                None => break,
                Some(Ok(item)) => items.push(item),
                Some(Err(mut fault)) => {
                    fault.steps.push(Step::Index(items.len()));
                    skip_seq(seq)?;
                    return Ok(Err(fault));
                }
            }
        }
        Ok(Ok(Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Self::Value, A::Error> {
        if let Err(fault) = self.take() {
            skip_map(map)?;
            return Ok(Err(fault));
        }
        let mut fields = Map::new();
        let mut faults = BTreeMap::new();
        let mut first = true;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if std::mem::take(&mut first) && key == NUMBER_TOKEN {
                let text = map.next_value_seed(NumberText)?;
                return Ok(match number_fault(&text) {
                    Some(fault) => Err(fault),
                    None => Ok(Value::Number(text.parse().map_err(A::Error::custom)?)),
                });
            }
            if fields.len() == MAX_LIST_ENTRIES && !fields.contains_key(&*key) {
                map.next_value::<&RawValue>()?;
                skip_map(map)?;
                return Ok(Err(Fault::new(FaultKind::Entries)));
            }
            // Building goes on past a NUL or a number fault (a later value under the same key
            // replaces it, as in a parsed object); the budget still bounds it.
            let fault = match map.next_value_seed(Bounded {
                left: &mut *self.left,
            })? {
                _ if key.contains('\0') => Some(Fault::new(FaultKind::Nul)),
                Ok(value) => {
                    fields.insert(key.clone().into_owned(), value);
                    None
                }
                Err(
                    fault @ Fault {
                        kind: FaultKind::Entries | FaultKind::Values,
                        ..
                    },
                ) => {
                    let mut fault = fault;
                    fault.steps.push(Step::Key(key.into_owned()));
                    skip_map(map)?;
                    return Ok(Err(fault));
                }
                Err(fault) => Some(fault),
            };
            record(&mut faults, key, fault);
        }
        Ok(match faults.into_values().next() {
            Some(fault) => Err(fault),
            None => Ok(Value::Object(fields)),
        })
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
        Ok(number_fault(&n.to_string()))
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
                return Ok(number_fault(&text));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(text: &str) -> Option<String> {
        top_level(text)
            .unwrap_or_else(|e| panic!("{e}"))
            .expect("an object")
            .check_storable()
            .err()
            .map(|rejection| rejection.info)
    }

    fn list(item: &str, n: usize) -> String {
        format!("[{}]", vec![item; n].join(","))
    }

    #[test]
    fn a_list_in_a_read_field_is_bounded_while_it_is_parsed() {
        let at_bound = format!(r#"{{"SeatList":{}}}"#, list("{}", MAX_LIST_ENTRIES));
        assert_eq!(fault(&at_bound), None);
        let past = format!(r#"{{"SeatList":{}}}"#, list("{}", MAX_LIST_ENTRIES + 1));
        assert_eq!(
            fault(&past).as_deref(),
            Some("SeatList has more than 10000 entries")
        );
        // Anywhere inside, objects' members included.
        let nested = format!(r#"{{"RoomInfo":{{"X":[1,{}]}}}}"#, list("0", 10_001));
        assert_eq!(
            fault(&nested).as_deref(),
            Some("RoomInfo.X[1] has more than 10000 entries")
        );
        let members: Vec<String> = (0..=MAX_LIST_ENTRIES)
            .map(|i| format!(r#""k{i}":0"#))
            .collect();
        let wide = format!(r#"{{"RoomInfo":{{{}}}}}"#, members.join(","));
        assert_eq!(
            fault(&wide).as_deref(),
            Some("RoomInfo has more than 10000 entries")
        );
    }

    #[test]
    fn the_read_fields_share_one_budget_of_values() {
        // Seven lists within the per-list bound, 70,007 values and more in all.
        let lists: Vec<String> = (0..7)
            .map(|i| format!(r#""L{i}":{}"#, list("0", MAX_LIST_ENTRIES)))
            .collect();
        let text = format!(r#"{{"RoomInfo":{{{}}}}}"#, lists.join(","));
        assert_eq!(
            fault(&text).as_deref(),
            Some("body has more than 70000 values in the fields roomsync reads")
        );
        // The same values in a field roomsync does not read cost no budget.
        let text = format!(r#"{{"Junk":{{{}}}}}"#, lists.join(","));
        assert_eq!(fault(&text), None);
    }

    #[test]
    fn a_skipped_field_is_still_checked_exactly() {
        // A NUL escape, deep inside, names its place.
        assert_eq!(
            fault(r#"{"Junk":[1,{"a":"x\u0000"}]}"#).as_deref(),
            Some("Junk[1].a contains a NUL character")
        );
        // An escaped backslash followed by "u0000" is no NUL: the scan's hit is checked.
        assert_eq!(fault(r#"{"Junk":["\\u0000"]}"#), None);
        // Numbers numeric cannot hold: by exponent, or by digits after the point.
        assert_eq!(
            fault(r#"{"Junk":[0,1e999999]}"#).as_deref(),
            Some("Junk[1] is a number beyond what PostgreSQL's numeric type can store")
        );
        assert_eq!(fault(r#"{"Junk":[0,1e9,"2e5"]}"#), None);
        let long = format!(r#"{{"Junk":[0.{}]}}"#, "1".repeat(16_384));
        assert_eq!(
            fault(&long).as_deref(),
            Some("Junk[0] is a number beyond what PostgreSQL's numeric type can store")
        );
        let fits = format!(
            r#"{{"Junk":[0.{}, "{}"]}}"#,
            "1".repeat(16_383),
            "7".repeat(40_000)
        );
        assert_eq!(fault(&fits), None);
    }

    #[test]
    fn the_scan_finds_every_digit_run_longer_than_its_bound() {
        for len in [15_999, 16_000, 16_001, 16_002, 24_000, 40_001] {
            for offset in [0, 1, 3_999, 7_999, 8_000, 8_001] {
                let text = format!("{}{}]", "[".repeat(offset), "1".repeat(len));
                assert_eq!(
                    may_be_unstorable(text.as_bytes()),
                    len > 16_000,
                    "{len} digits after {offset} bytes"
                );
            }
        }
    }
}
