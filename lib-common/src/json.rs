//! Strict JSON reading for the configuration files: like `serde_json::from_str::<Value>`, but a
//! key that appears twice in one object is an error naming the key, its JSON Pointer, line and
//! column. (`serde_json` keeps the last value silently, so a second `"lxc_configs": {}` would
//! empty the list without a word.)

use std::fmt;

use serde::Deserializer;
use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Parse `text` as one JSON value, refusing duplicate keys in any object. The error's
/// `line()`/`column()` point just after the second occurrence of the key.
pub fn from_str_strict(text: &str) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let v = Strict { pointer: "" }.deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// Escape a key for a JSON Pointer (RFC 6901).
pub fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Deserializes one value whose JSON Pointer is `pointer`.
struct Strict<'p> {
    pointer: &'p str,
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        loop {
            let pointer = format!("{}/{}", self.pointer, out.len());
            match seq.next_element_seed(Strict { pointer: &pointer })? {
                Some(v) => out.push(v),
                None => break,
            }
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let pointer = format!("{}/{}", self.pointer, escape_pointer(&key));
            if out.contains_key(&key) {
                return Err(A::Error::custom(format!(
                    "duplicate key '{key}' ({pointer}); each key may appear only once in an object"
                )));
            }
            let v = map.next_value_seed(Strict { pointer: &pointer })?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_values_as_serde_json() {
        let text =
            r#"{"a": [1, -2, 2.5, "x", null, true], "b": {"c~/": {}}, "d": 18446744073709551615}"#;
        assert_eq!(
            from_str_strict(text).unwrap(),
            serde_json::from_str::<Value>(text).unwrap()
        );
    }

    #[test]
    fn duplicate_keys_are_refused_with_key_pointer_and_line() {
        let text = "{\n  \"lxc_configs\": {\"900\": {}},\n  \"lxc_configs\": {}\n}";
        let e = from_str_strict(text).unwrap_err();
        assert!(
            e.to_string()
                .contains("duplicate key 'lxc_configs' (/lxc_configs)"),
            "{e}"
        );
        assert_eq!(e.line(), 3);

        let nested = "{\"a\": [{\"x\": 1}, {\"x\": 1, \"x\": 2}]}";
        let e = from_str_strict(nested).unwrap_err();
        assert!(e.to_string().contains("duplicate key 'x' (/a/1/x)"), "{e}");
        // The same key in different objects is fine.
        assert!(from_str_strict("{\"a\": {\"x\": 1}, \"b\": {\"x\": 1}}").is_ok());
    }

    #[test]
    fn syntax_errors_and_trailing_text_are_refused() {
        assert!(from_str_strict("{").is_err());
        assert!(from_str_strict("{} {}").is_err());
    }
}
