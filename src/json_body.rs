//! JSON request bodies: exactly one JSON object read into a serde type, refused with a detail
//! that names the field that is wrong. The REST handlers ([`crate::api::parse_json`]) and the
//! payment notices ([`crate::payments`]) share it, so every body is read one way.

/// Reads `bytes` as one JSON object of type `T`. serde alone would also take an array of the
/// fields in order, which no client means. The error is the detail for the client:
/// `invalid JSON body: price_fen: invalid type ...`, or `invalid JSON body: missing field ...`.
pub fn parse_object<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON body: {e}"))?;
    if !value.is_object() {
        return Err("invalid JSON body: expected a JSON object".to_owned());
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            format!("invalid JSON body: {inner}")
        } else {
            format!("invalid JSON body: {path}: {inner}")
        }
    })
}
