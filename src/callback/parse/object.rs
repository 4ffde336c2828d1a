//! A JSON object's fields, typed and bounded, with errors that name the field's path
//! (`RoomInfo.RoomId`, `SeatList[2].Index`); and ids as Tencent sends them.

use serde_json::{Map, Value};

use crate::callback::{Id, limits::MAX_LIST_ENTRIES, rejection::Rejection};

/// A JSON object and its path, for messages that name the field.
pub(super) struct Object<'a> {
    pub(super) map: &'a Map<String, Value>,
    pub(super) path: String,
}

impl<'a> Object<'a> {
    pub(super) fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// A present, non-null value.
    pub(super) fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub(super) fn opt_text(&self, key: &str) -> Result<Option<String>, Rejection> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Rejection::wrong_type(&self.path_of(key), "a string")),
        }
    }

    /// A string of at most `max` bytes.
    pub(super) fn opt_short_text(
        &self,
        key: &str,
        max: usize,
    ) -> Result<Option<String>, Rejection> {
        let text = self.opt_text(key)?;
        if text.as_ref().is_some_and(|t| t.len() > max) {
            let problem = format!("is longer than {max} bytes");
            return Err(Rejection::bounds(&self.path_of(key), &problem));
        }
        Ok(text)
    }

    pub(super) fn opt_id(&self, key: &str) -> Result<Option<Id>, Rejection> {
        self.get(key)
            .map(|v| id_from(v, &self.path_of(key)))
            .transpose()
    }

    pub(super) fn id(&self, key: &str) -> Result<Id, Rejection> {
        self.opt_id(key)?
            .ok_or_else(|| Rejection::missing(&self.path_of(key)))
    }

    pub(super) fn opt_id_list(&self, key: &str) -> Result<Vec<Id>, Rejection> {
        let path = self.path_of(key);
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => {
                if items.len() > MAX_LIST_ENTRIES {
                    return Err(too_many(&path));
                }
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| id_from(v, &format!("{path}[{i}]")))
                    .collect()
            }
            Some(_) => Err(Rejection::wrong_type(&path, "an array of strings")),
        }
    }

    pub(super) fn opt_integer(
        &self,
        key: &str,
        min: i64,
        max: i64,
    ) -> Result<Option<i64>, Rejection> {
        let path = self.path_of(key);
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(v) if (min..=max).contains(&v) => Ok(Some(v)),
                Some(_) => Err(Rejection::bounds(
                    &path,
                    &format!("must be in {min}..={max}"),
                )),
                // A float, or an integer beyond i64.
                None if n.is_f64() => Err(Rejection::wrong_type(&path, "an integer")),
                None => Err(Rejection::bounds(
                    &path,
                    &format!("must be in {min}..={max}"),
                )),
            },
            Some(_) => Err(Rejection::wrong_type(&path, "an integer")),
        }
    }

    /// A boolean, also when sent as the string "true" or "false".
    pub(super) fn opt_bool(&self, key: &str) -> Result<Option<bool>, Rejection> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(_) => Err(Rejection::wrong_type(&self.path_of(key), "a boolean")),
        }
    }
}

/// A list longer than [`MAX_LIST_ENTRIES`], named by its path.
pub(super) fn too_many(path: &str) -> Rejection {
    Rejection::bounds(path, &format!("has more than {MAX_LIST_ENTRIES} entries"))
}

/// An account as Tencent sends it (see [`id_from`]).
pub fn account_id(value: &Value, path: &str) -> Result<Id, Rejection> {
    id_from(value, path)
}

/// An id sent as a string, or as a bare integer (kept digit for digit).
fn id_from(value: &Value, path: &str) -> Result<Id, Rejection> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => {
            let digits = n.to_string();
            if !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Rejection::wrong_type(
                    path,
                    "a string or a non-negative integer",
                ));
            }
            digits
        }
        _ => return Err(Rejection::wrong_type(path, "a string")),
    };
    Id::parse(&text).map_err(|problem| Rejection::bounds(path, &problem.to_string()))
}
