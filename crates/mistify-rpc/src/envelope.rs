//! The two JSON-RPC dialects on the wire.
//!
//! * **v1** — gorilla/rpc v1, what every Go sub-agent speaks: request
//!   `{"method","params":[obj],"id"}`, reply `{"result":…,"error":null|"text","id":…}`.
//! * **2.0** — the same plus `"jsonrpc":"2.0"`; errors are `{"code","message"}` objects.
//!
//! Requests are decoded without copying: `params` and `id` stay raw JSON, so the id is
//! echoed as the exact token received (never round-tripped through a float).

use serde::Deserialize;
use serde_json::value::RawValue;

/// Which dialect a request was written in; its reply uses the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    V1,
    V2,
}

/// JSON-RPC 2.0 error codes used by [`crate::Server`].
pub mod codes {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    /// A method that returned an error.
    pub const SERVER_ERROR: i64 = -32000;
}

/// A request object with every member kept raw; type checks happen afterwards so that
/// each dialect can report them its own way.
///
/// A member that is absent is `None`; one that is present, even as `null`, is `Some`.
#[derive(Debug, Deserialize)]
pub struct RawRequest<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    pub jsonrpc: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub method: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub params: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub id: Option<&'a RawValue>,
}

fn present<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(de).map(Some)
}

impl RawRequest<'_> {
    /// v1 unless the request names a `jsonrpc` version.
    pub fn dialect(&self) -> Dialect {
        if self.jsonrpc.is_some() {
            Dialect::V2
        } else {
            Dialect::V1
        }
    }

    /// The id token when answering in `dialect`, `None` for a notification (absent id,
    /// or `null` in v1).
    pub fn reply_id(&self, dialect: Dialect) -> Option<&RawValue> {
        match (self.id, dialect) {
            (None, _) => None,
            (Some(id), Dialect::V1) if id.get() == "null" => None,
            (Some(id), _) => Some(id),
        }
    }
}

/// Parses `raw` as a JSON string, `None` if it is anything else.
pub fn as_str(raw: &RawValue) -> Option<String> {
    serde_json::from_str::<String>(raw.get()).ok()
}

/// Writes a JSON string literal (escaped) into `out`.
fn push_json_str(out: &mut String, s: &str) {
    // Serializing a &str cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

/// A v1 success reply: `{"result":R,"error":null,"id":ID}` plus the newline Go writes.
pub fn v1_result(result: &str, id: &RawValue) -> String {
    let mut s = String::with_capacity(result.len() + id.get().len() + 32);
    s.push_str("{\"result\":");
    s.push_str(result);
    s.push_str(",\"error\":null,\"id\":");
    s.push_str(id.get());
    s.push_str("}\n");
    s
}

/// A v1 error reply: `{"result":null,"error":"message","id":ID}` plus newline.
pub fn v1_error(message: &str, id: &RawValue) -> String {
    let mut s = String::with_capacity(message.len() + id.get().len() + 40);
    s.push_str("{\"result\":null,\"error\":");
    push_json_str(&mut s, message);
    s.push_str(",\"id\":");
    s.push_str(id.get());
    s.push_str("}\n");
    s
}

/// A 2.0 success reply.
pub fn v2_result(result: &str, id: &RawValue) -> String {
    let mut s = String::with_capacity(result.len() + id.get().len() + 32);
    s.push_str("{\"jsonrpc\":\"2.0\",\"result\":");
    s.push_str(result);
    s.push_str(",\"id\":");
    s.push_str(id.get());
    s.push('}');
    s
}

/// A 2.0 error reply; `id` is `null` when the request's id could not be read.
pub fn v2_error(code: i64, message: &str, id: Option<&RawValue>) -> String {
    let mut s = String::with_capacity(message.len() + 64);
    s.push_str("{\"jsonrpc\":\"2.0\",\"error\":{\"code\":");
    s.push_str(&code.to_string());
    s.push_str(",\"message\":");
    push_json_str(&mut s, message);
    s.push_str("},\"id\":");
    s.push_str(id.map(RawValue::get).unwrap_or("null"));
    s.push('}');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    #[test]
    fn replies_are_byte_exact() {
        let id = raw("9223372036854775807");
        assert_eq!(
            v1_result("{\"guest\":null}", &id),
            "{\"result\":{\"guest\":null},\"error\":null,\"id\":9223372036854775807}\n"
        );
        assert_eq!(
            v1_error("bad \"thing\"", &raw("\"abc\"")),
            "{\"result\":null,\"error\":\"bad \\\"thing\\\"\",\"id\":\"abc\"}\n"
        );
        assert_eq!(
            v2_error(codes::METHOD_NOT_FOUND, "nope", None),
            "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32601,\"message\":\"nope\"},\"id\":null}"
        );
    }

    #[test]
    fn dialect_and_notification() {
        let r: RawRequest =
            serde_json::from_str(r#"{"method":"A.B","params":[],"id":null}"#).unwrap();
        assert_eq!(r.dialect(), Dialect::V1);
        assert!(r.reply_id(r.dialect()).is_none());
        let r: RawRequest =
            serde_json::from_str(r#"{"jsonrpc":"2.0","method":"A.B","id":null}"#).unwrap();
        assert_eq!(r.dialect(), Dialect::V2);
        assert_eq!(r.reply_id(r.dialect()).map(|i| i.get()), Some("null"));
        assert!(r.reply_id(Dialect::V1).is_none());
    }
}
