//! Request parsing and validation shared by the management handlers:
//! every failure is a 400 whose detail starts with the field name.

use super::ApiError;
use bytes::Bytes;
use regex::Regex;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::LazyLock;

/// Names of APIs, stages, access controls, auths, plans, keys.
pub static NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z][a-z0-9\-]{1,48}[a-z0-9]$").expect("static regex"));
/// A resource path part: a literal or a `{parameter}`.
pub static PATH_PART: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(\{[a-z][a-z0-9\-]{1,46}[a-z0-9]\}|[a-z][a-z0-9\-]{1,48}[a-z0-9])$")
        .expect("static regex")
});

/// Parse a JSON body, which must be an object; errors name the field at
/// fault and never a Rust type.
pub fn json<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Err(ApiError::field("body", "a JSON object is required")),
        // serde fills a struct from an array's items in order: refused.
        Some(b'{') => {}
        Some(_) => return Err(ApiError::field("body", "must be a JSON object")),
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let v: T = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.to_string();
        // "missing field `name` at line 1 column 2" names the field itself.
        if let Some(rest) = msg.strip_prefix("missing field `") {
            if let Some(field) = rest.split('`').next() {
                let full = if path == "." {
                    field.to_string()
                } else {
                    format!("{path}.{field}")
                };
                return ApiError::field(&full, "is required");
            }
        }
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::field("body", format!("malformed JSON: {msg}"));
        }
        let msg = plain(msg.split(" at line ").next().unwrap_or(&msg));
        if path == "." || path.is_empty() {
            return ApiError::field("body", msg);
        }
        ApiError::field(&path, msg)
    })?;
    Ok(v)
}

/// serde's wording without Rust's: `expected struct X with 2 elements`,
/// `expected u32`, `untagged enum Days` say what JSON is wanted instead.
fn plain(msg: &str) -> String {
    static RUST: LazyLock<[(Regex, &str); 6]> = LazyLock::new(|| {
        let r = |p: &str| Regex::new(p).expect("static regex");
        [
            (
                r(r"(tuple )?struct [A-Za-z_][A-Za-z0-9_]*( with \d+ elements?)?"),
                "a JSON object",
            ),
            (
                r(r"data did not match any variant of untagged enum [A-Za-z_][A-Za-z0-9_]*"),
                "is not one of the accepted forms",
            ),
            (
                r(r"enum [A-Za-z_][A-Za-z0-9_]*"),
                "one of the accepted values",
            ),
            (
                r(r"\b(u8|u16|u32|u64|u128|usize)\b"),
                "a non-negative integer in range",
            ),
            (r(r"\b(i8|i16|i32|i64|i128|isize)\b"), "an integer in range"),
            (r(r"\b(f32|f64)\b"), "a number"),
        ]
    });
    let mut out = msg
        .replace("a sequence", "an array")
        .replace("a map", "a JSON object");
    for (re, with) in RUST.iter() {
        out = re.replace_all(&out, *with).into_owned();
    }
    out
}

/// A field the reference marks required that may be null: absent is a
/// 400 naming it (`missing field`), null is `None`. Use with
/// `#[serde(deserialize_with = "validate::nullable")]`.
pub fn nullable<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(d)
}

/// A nested object of a request body: a JSON object only (serde would
/// also fill a struct from an array's items in order).
#[derive(Debug, Clone)]
pub struct Obj<T>(pub T);

impl<T> std::ops::Deref for Obj<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<'de, T: DeserializeOwned> serde::Deserialize<'de> for Obj<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        serde_json::from_value(serde_json::Value::Object(map))
            .map(Obj)
            .map_err(|e| D::Error::custom(e.to_string()))
    }
}

pub fn name(field: &str, v: &str) -> Result<(), ApiError> {
    if v.len() < 3 || v.len() > 50 {
        return Err(ApiError::field(field, "must be 3 to 50 characters"));
    }
    if !NAME.is_match(v) {
        return Err(ApiError::field(
            field,
            "must match ^[a-z][a-z0-9\\-]{1,48}[a-z0-9]$ (lowercase letters, digits and '-', starting with a letter)",
        ));
    }
    Ok(())
}

pub fn max_len(field: &str, v: &str, max: usize) -> Result<(), ApiError> {
    if v.chars().count() > max {
        return Err(ApiError::field(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(())
}

/// Objects listed by name or by creation time.
pub trait Named {
    fn name(&self) -> &str;
    fn created_at(&self) -> &str;
    fn id(&self) -> &str;
}

macro_rules! named {
    ($($t:ty),*) => {$(
        impl Named for $t {
            fn name(&self) -> &str { &self.name }
            fn created_at(&self) -> &str { &self.created_at }
            fn id(&self) -> &str { &self.id }
        }
    )*};
}
named!(
    crate::store::model::Api,
    crate::store::model::AccessControl,
    crate::store::model::Auth,
    crate::store::model::UsagePlan,
    crate::store::model::ApiKey
);

/// 409 when `name` is already taken among `taken`, 400 naming `name` when
/// there are already `max` of them.
pub fn room_for<'a>(
    what: &str,
    name: &str,
    taken: impl Iterator<Item = &'a str>,
    max: usize,
) -> Result<(), ApiError> {
    let mut n = 0;
    for t in taken {
        if t == name {
            return Err(ApiError::conflict(format!("{what} {name} already exists")));
        }
        n += 1;
    }
    if n >= max {
        return Err(ApiError::field(
            "name",
            format!("at most {max} of them: {what} limit reached"),
        ));
    }
    Ok(())
}

/// `page`, `size`, `sort` and filters of list operations.
pub struct ListQuery {
    pub page: usize,
    pub size: usize,
    pub sort_field: String,
    pub descending: bool,
    pub params: HashMap<String, String>,
}

impl ListQuery {
    pub fn parse(raw: Option<&str>, sortable: &[&str]) -> Result<ListQuery, ApiError> {
        let params: HashMap<String, String> = match raw {
            Some(q) => serde_urlencoded_pairs(q),
            None => HashMap::new(),
        };
        let num = |k: &str, default: usize, min: usize, max: usize| -> Result<usize, ApiError> {
            match params.get(k).map(String::as_str) {
                None | Some("") => Ok(default),
                Some(s) => match s.parse::<usize>() {
                    Ok(n) if n >= min && n <= max => Ok(n),
                    _ => Err(ApiError::field(
                        k,
                        format!("must be an integer from {min} to {max}"),
                    )),
                },
            }
        };
        let page = num("page", 0, 0, 1_000_000)?;
        let size = num("size", 20, 1, 10_000)?;
        let (sort_field, descending) = match params.get("sort").map(String::as_str) {
            None | Some("") => ("created_at".to_string(), false),
            Some(s) => {
                let (f, dir) = s.split_once(':').unwrap_or((s, "asc"));
                let desc = match dir {
                    "asc" => false,
                    "desc" => true,
                    _ => return Err(ApiError::field("sort", "direction must be asc or desc")),
                };
                if !sortable.contains(&f) {
                    return Err(ApiError::field(
                        "sort",
                        format!("field must be one of {}", sortable.join(", ")),
                    ));
                }
                (f.to_string(), desc)
            }
        };
        Ok(ListQuery {
            page,
            size,
            sort_field,
            descending,
            params,
        })
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.params
            .get(k)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// The total count and the requested page of named objects, sorted by
    /// `name` or `created_at` (ties broken by id).
    pub fn page_named<'a, T: Named>(&self, items: Vec<&'a T>) -> (usize, Vec<&'a T>) {
        let count = items.len();
        let page = self.page_of(items, |x, f| {
            let primary = if f == "name" {
                x.name()
            } else {
                x.created_at()
            };
            (primary.to_string(), x.id().to_string())
        });
        (count, page)
    }

    /// Sort by the key function, then cut the requested page.
    pub fn page_of<T, K: Ord>(&self, mut items: Vec<T>, key: impl Fn(&T, &str) -> K) -> Vec<T> {
        items.sort_by(|a, b| {
            let o = key(a, &self.sort_field).cmp(&key(b, &self.sort_field));
            if self.descending {
                o.reverse()
            } else {
                o
            }
        });
        items
            .into_iter()
            .skip(self.page.saturating_mul(self.size))
            .take(self.size)
            .collect()
    }
}

fn serde_urlencoded_pairs(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let s = s.replace('+', " ");
    percent_encoding::percent_decode_str(&s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn names_and_parts() {
        assert!(name("name", "test-api").is_ok());
        assert!(name("name", "Test").is_err());
        assert!(name("name", "ab").is_err());
        assert!(name("name", "abc-").is_err());
        assert!(PATH_PART.is_match("{user-id}"));
        assert!(PATH_PART.is_match("users"));
        assert!(!PATH_PART.is_match("{}"));
        assert!(!PATH_PART.is_match("Users"));
    }
    #[test]
    fn json_errors_name_fields() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct R {
            name: String,
            n: Option<u32>,
        }
        let e = json::<R>(&Bytes::from_static(b"{}")).unwrap_err();
        assert!(e.detail.starts_with("name:"), "{}", e.detail);
        let e = json::<R>(&Bytes::from_static(b"{\"name\":\"x\",\"n\":\"a\"}")).unwrap_err();
        assert!(e.detail.starts_with("n:"), "{}", e.detail);
        let e = json::<R>(&Bytes::from_static(b"{\"name\":")).unwrap_err();
        assert!(e.detail.starts_with("body:"), "{}", e.detail);
        let e = json::<R>(&Bytes::from_static(b"{\"name\":\"x\",\"n\":-1}")).unwrap_err();
        assert!(e.detail.starts_with("n:"), "{}", e.detail);
        assert!(!e.detail.contains("u32"), "{}", e.detail);
    }

    #[test]
    fn bodies_must_be_objects() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Inner {
            a: String,
            b: u32,
        }
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct R {
            name: String,
            inner: Option<Obj<Inner>>,
            #[serde(deserialize_with = "nullable")]
            list: Option<Vec<String>>,
        }
        for body in [
            &b"[\"x\", null, null]"[..],
            b" [1]",
            b"\"x\"",
            b"5",
            b"null",
        ] {
            let e = json::<R>(&Bytes::copy_from_slice(body)).unwrap_err();
            assert_eq!(e.detail, "body: must be a JSON object");
        }
        let e = json::<R>(&Bytes::from_static(
            b"{\"name\":\"x\",\"inner\":[\"a\",1],\"list\":null}",
        ))
        .unwrap_err();
        assert!(e.detail.starts_with("inner:"), "{}", e.detail);
        assert!(!e.detail.contains("struct"), "{}", e.detail);
        // Required but nullable: absent is an error, null is None.
        let e = json::<R>(&Bytes::from_static(b"{\"name\":\"x\"}")).unwrap_err();
        assert_eq!(e.detail, "list: is required");
        let r = json::<R>(&Bytes::from_static(
            b"{\"name\":\"x\",\"list\":null,\"inner\":{\"a\":\"q\",\"b\":1}}",
        ))
        .unwrap();
        assert!(r.list.is_none());
        assert_eq!(r.inner.map(|i| i.0.b), Some(1));
    }
}
