//! UserSig: the credential every Tencent REST call carries in its `usersig` query parameter.
//!
//! Tencent's "TLSSigAPIv2" scheme: an HMAC-SHA256, keyed with the app's secret key, over
//!
//! ```text
//! TLS.identifier:{identifier}\nTLS.sdkappid:{sdkappid}\nTLS.time:{unix seconds}\nTLS.expire:{seconds}\n
//! ```
//!
//! is put, base64-encoded, with those fields and `TLS.ver = "2.0"` into a JSON object; the JSON
//! is zlib-compressed and base64-encoded with `+`→`*`, `/`→`-`, `=`→`_` (so the value can sit in
//! a URL unescaped).
//!
//! A UserSig lets anyone who holds it act as the app administrator until it expires, so it is
//! kept in a [`Secret`] like the key it is derived from.

use std::{
    io::Write,
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use flate2::{Compression, write::ZlibEncoder};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::{callback::SdkAppId, config::Secret};

/// The only version this module writes and reads.
pub const VERSION: &str = "2.0";

/// How long a cached UserSig is valid. Tencent advises at least 24 hours.
pub const DEFAULT_LIFETIME_SECS: u64 = 24 * 60 * 60;

/// A cached UserSig is replaced when less than this is left, so that no request goes out with a
/// signature that expires on its way (or on a server whose clock is a little ahead).
pub const DEFAULT_REFRESH_MARGIN_SECS: u64 = 60 * 60;

/// Makes a UserSig for `identifier` of app `sdk_app_id`, valid `expire` seconds from `time`
/// (Unix seconds). Deterministic: the same inputs give the same text.
///
/// The JSON is written as Tencent's reference implementation writes it (Python's
/// `json.dumps`: that field order, `", "` and `": "` separators, non-ASCII escaped) and
/// compressed at zlib's default level. The JSON is the reference's byte for byte; the
/// compressed bytes may differ (deflate output is not canonical), which no decoder minds.
pub fn generate(
    key: &Secret,
    sdk_app_id: SdkAppId,
    identifier: &str,
    time: i64,
    expire: u64,
) -> Secret {
    let app = sdk_app_id.get();
    let expire = i64::try_from(expire).unwrap_or(i64::MAX);
    let sig = STANDARD.encode(hmac(
        key,
        &content_to_sign(identifier, app, time, expire, None),
    ));
    let json = format!(
        "{{\"TLS.ver\": {}, \"TLS.identifier\": {}, \"TLS.sdkappid\": {app}, \"TLS.expire\": {expire}, \"TLS.time\": {time}, \"TLS.sig\": {}}}",
        python_json_string(VERSION),
        python_json_string(identifier),
        python_json_string(&sig),
    );
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
    encoder
        .write_all(json.as_bytes())
        .expect("writing to a Vec cannot fail");
    let compressed = encoder.finish().expect("writing to a Vec cannot fail");
    Secret::new(to_url_base64(&STANDARD.encode(compressed)))
}

/// One app's UserSig, made once and reused until it gets close to its expiry.
///
/// Making one costs an HMAC and a zlib pass: cheap, but there is no reason to pay it on every
/// request. The cache is shared by all requests of the app (`&self`, a short-held mutex).
pub struct UserSigCache {
    key: Secret,
    sdk_app_id: SdkAppId,
    identifier: String,
    lifetime_secs: u64,
    refresh_margin_secs: u64,
    current: Mutex<Option<(Secret, i64)>>,
}

impl std::fmt::Debug for UserSigCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserSigCache")
            .field("sdk_app_id", &self.sdk_app_id)
            .field("identifier", &self.identifier)
            .field("lifetime_secs", &self.lifetime_secs)
            .finish_non_exhaustive()
    }
}

impl UserSigCache {
    /// A cache with the default lifetime (1 day) and refresh margin (1 hour).
    pub fn new(key: Secret, sdk_app_id: SdkAppId, identifier: impl Into<String>) -> Self {
        Self::with_lifetime(
            key,
            sdk_app_id,
            identifier,
            DEFAULT_LIFETIME_SECS,
            DEFAULT_REFRESH_MARGIN_SECS,
        )
    }

    /// `refresh_margin_secs` must be smaller than `lifetime_secs`, or every call makes a new
    /// signature.
    pub fn with_lifetime(
        key: Secret,
        sdk_app_id: SdkAppId,
        identifier: impl Into<String>,
        lifetime_secs: u64,
        refresh_margin_secs: u64,
    ) -> Self {
        Self {
            key,
            sdk_app_id,
            identifier: identifier.into(),
            lifetime_secs,
            refresh_margin_secs,
            current: Mutex::new(None),
        }
    }

    pub fn sdk_app_id(&self) -> SdkAppId {
        self.sdk_app_id
    }

    pub fn identifier(&self) -> &str {
        &self.identifier
    }

    /// The UserSig to send now.
    pub fn get(&self) -> Secret {
        self.get_at(unix_now())
    }

    /// The UserSig to send at `now` (Unix seconds): the cached one while more than the refresh
    /// margin is left, else a new one.
    pub fn get_at(&self, now: i64) -> Secret {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let margin = i64::try_from(self.refresh_margin_secs).unwrap_or(i64::MAX);
        match &*current {
            // `now >= made` too: after the clock stepped back, make a new one rather than
            // reuse one that claims to come from the future.
            Some((sig, expires_at))
                if expires_at.saturating_sub(now) > margin
                    && now >= expires_at.saturating_sub(self.lifetime_i64()) =>
            {
                sig.clone()
            }
            _ => {
                let sig = generate(
                    &self.key,
                    self.sdk_app_id,
                    &self.identifier,
                    now,
                    self.lifetime_secs,
                );
                *current = Some((sig.clone(), now.saturating_add(self.lifetime_i64())));
                sig
            }
        }
    }

    fn lifetime_i64(&self) -> i64 {
        i64::try_from(self.lifetime_secs).unwrap_or(i64::MAX)
    }
}

/// Unix seconds now (0 if the clock is before 1970, which no real host is).
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn content_to_sign(
    identifier: &str,
    sdk_app_id: i64,
    time: i64,
    expire: i64,
    userbuf: Option<&str>,
) -> String {
    let mut content = format!(
        "TLS.identifier:{identifier}\nTLS.sdkappid:{sdk_app_id}\nTLS.time:{time}\nTLS.expire:{expire}\n"
    );
    if let Some(userbuf) = userbuf {
        content.push_str(&format!("TLS.userbuf:{userbuf}\n"));
    }
    content
}

fn hmac(key: &Secret, content: &str) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.expose().as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(content.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn to_url_base64(standard: &str) -> String {
    standard
        .chars()
        .map(|c| match c {
            '+' => '*',
            '/' => '-',
            '=' => '_',
            c => c,
        })
        .collect()
}

/// A JSON string literal as Python's `json.dumps` writes it (`ensure_ascii`): `"` and `\`
/// escaped, control characters and everything outside ASCII as `\uXXXX` (UTF-16 units).
fn python_json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
    out
}

/// A reader of UserSigs, for the tests only: roomsync makes UserSigs and never reads one (the
/// fake Tencent server of the integration tests checks them on its own).
#[cfg(test)]
mod reader {
    use std::io::Read;

    use base64::{Engine, engine::general_purpose::STANDARD};
    use flate2::read::ZlibDecoder;
    use hmac::{Hmac, KeyInit, Mac};
    use serde_json::Value;
    use sha2::Sha256;

    use super::{VERSION, content_to_sign};
    use crate::config::Secret;

    /// Decompressed UserSigs larger than this are refused: a real one is about 200 bytes, and a
    /// zlib bomb must not exhaust memory in [`decode`].
    const MAX_DECODED_BYTES: u64 = 64 * 1024;

    /// Why a UserSig was refused by [`decode`] or [`verify`]. No variant carries the key or the
    /// signature.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum UserSigError {
        #[error("UserSig is not valid base64 or zlib")]
        Encoding,
        #[error("UserSig JSON is malformed: {0}")]
        Malformed(&'static str),
        #[error("UserSig version is not {VERSION}")]
        Version,
        #[error("UserSig HMAC does not match")]
        BadSignature,
        #[error("UserSig expired")]
        Expired,
    }

    /// The fields of a decoded UserSig.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct UserSigFields {
        pub identifier: String,
        pub sdk_app_id: i64,
        /// When it was made, Unix seconds.
        pub time: i64,
        /// Seconds it is valid for, counted from `time`.
        pub expire: i64,
        /// `TLS.userbuf` (base64 text), present only in signatures made with a user buffer.
        pub userbuf: Option<String>,
        /// `TLS.sig`: base64 of the HMAC.
        pub sig: String,
    }

    impl UserSigFields {
        /// Unix seconds after which the signature is no longer valid.
        pub fn expires_at(&self) -> i64 {
            self.time.saturating_add(self.expire)
        }
    }

    /// Reads the fields of a UserSig without checking its HMAC or expiry.
    pub fn decode(usersig: &str) -> Result<UserSigFields, UserSigError> {
        let compressed = STANDARD
            .decode(from_url_base64(usersig))
            .map_err(|_| UserSigError::Encoding)?;
        let mut json = Vec::new();
        ZlibDecoder::new(compressed.as_slice())
            .take(MAX_DECODED_BYTES + 1)
            .read_to_end(&mut json)
            .map_err(|_| UserSigError::Encoding)?;
        if json.len() as u64 > MAX_DECODED_BYTES {
            return Err(UserSigError::Malformed("too large"));
        }
        let value: Value =
            serde_json::from_slice(&json).map_err(|_| UserSigError::Malformed("not JSON"))?;
        let text = |field: &'static str| {
            value
                .get(field)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or(UserSigError::Malformed(field))
        };
        let integer = |field: &'static str| {
            value
                .get(field)
                .and_then(Value::as_i64)
                .ok_or(UserSigError::Malformed(field))
        };
        if text("TLS.ver")? != VERSION {
            return Err(UserSigError::Version);
        }
        Ok(UserSigFields {
            identifier: text("TLS.identifier")?,
            sdk_app_id: integer("TLS.sdkappid")?,
            time: integer("TLS.time")?,
            expire: integer("TLS.expire")?,
            userbuf: match value.get("TLS.userbuf") {
                None => None,
                Some(_) => Some(text("TLS.userbuf")?),
            },
            sig: text("TLS.sig")?,
        })
    }

    /// Decodes a UserSig and checks it as Tencent does: the HMAC under `key` (in constant time),
    /// then that it has not expired at `now` (Unix seconds).
    pub fn verify(key: &Secret, usersig: &str, now: i64) -> Result<UserSigFields, UserSigError> {
        let fields = decode(usersig)?;
        let sig = STANDARD
            .decode(&fields.sig)
            .map_err(|_| UserSigError::Malformed("TLS.sig"))?;
        let content = content_to_sign(
            &fields.identifier,
            fields.sdk_app_id,
            fields.time,
            fields.expire,
            fields.userbuf.as_deref(),
        );
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.expose().as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(content.as_bytes());
        mac.verify_slice(&sig)
            .map_err(|_| UserSigError::BadSignature)?;
        if now > fields.expires_at() {
            return Err(UserSigError::Expired);
        }
        Ok(fields)
    }

    pub fn from_url_base64(tencent: &str) -> String {
        tencent
            .chars()
            .map(|c| match c {
                '*' => '+',
                '-' => '/',
                '_' => '=',
                c => c,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use flate2::read::ZlibDecoder;

    use super::{
        reader::{UserSigError, UserSigFields, decode, from_url_base64, verify},
        *,
    };

    /// The sample key of Tencent's reference implementation (not a real app's key).
    const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
    const APP: i64 = 1_400_000_000;
    const TIME: i64 = 1_700_000_000;

    /// Made with Tencent's reference implementation, the PyPI package `tls-sig-api-v2`
    /// version 1.1 (module `TLSSigAPIv2`), under CPython with zlib 1.2.13:
    ///
    /// ```python
    /// import time, TLSSigAPIv2
    /// time.time = lambda: 1700000000
    /// api = TLSSigAPIv2.TLSSigAPIv2(1400000000, "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e")
    /// print(api.gen_sig("administrator", 86400))
    /// ```
    const REFERENCE: &str = "eJyrVgrxCdYrSy1SslJQMtIzUNJRAItkpqTmlWSmZUIkElNyM-Myi0uKEkvyi2BKilOyEwsKMlOACgxNDKAAKpdaUZBZlAqUsTAzgQuWZOaChAzN0RQXZ6aDLKn0cUzVLjcPD00NLS1MCrPM0A*JMLcoNTLMD3HP1M60jCowLDUOKMiLNDOwVaoFAD4PNPI_";
    /// The decompressed JSON of [`REFERENCE`].
    const REFERENCE_JSON: &str = r#"{"TLS.ver": "2.0", "TLS.identifier": "administrator", "TLS.sdkappid": 1400000000, "TLS.expire": 86400, "TLS.time": 1700000000, "TLS.sig": "yLAe+w7WUeUuqbV9h/TX78u21oTGi+i9Zp1u3PpnY60="}"#;

    fn key() -> Secret {
        Secret::new(KEY)
    }

    fn app() -> SdkAppId {
        SdkAppId::parse(&APP.to_string()).unwrap()
    }

    fn inflate(usersig: &str) -> String {
        let bytes = STANDARD.decode(from_url_base64(usersig)).unwrap();
        let mut json = String::new();
        ZlibDecoder::new(bytes.as_slice())
            .read_to_string(&mut json)
            .unwrap();
        json
    }

    #[test]
    fn matches_the_reference_implementation() {
        let ours = generate(&key(), app(), "administrator", TIME, 86_400);
        // The JSON inside is byte for byte the reference's. The compressed bytes are not:
        // a deflate stream is not canonical, and flate2's pure-Rust backend chooses other
        // matches than C zlib at the same level. What Tencent reads is the decompressed JSON.
        assert_eq!(inflate(REFERENCE), REFERENCE_JSON);
        assert_eq!(inflate(ours.expose()), REFERENCE_JSON);
    }

    #[test]
    fn the_reference_signature_verifies() {
        let fields = verify(&key(), REFERENCE, TIME + 10).unwrap();
        assert_eq!(
            fields,
            UserSigFields {
                identifier: "administrator".into(),
                sdk_app_id: APP,
                time: TIME,
                expire: 86_400,
                userbuf: None,
                sig: "yLAe+w7WUeUuqbV9h/TX78u21oTGi+i9Zp1u3PpnY60=".into(),
            }
        );
        assert_eq!(fields.expires_at(), TIME + 86_400);
    }

    #[test]
    fn round_trip() {
        let sig = generate(&key(), app(), "admin-ü\"x", TIME, 3_600);
        let fields = verify(&key(), sig.expose(), TIME + 3_600).unwrap();
        assert_eq!(fields.identifier, "admin-ü\"x");
        assert_eq!(fields.sdk_app_id, APP);
        assert_eq!((fields.time, fields.expire), (TIME, 3_600));
        assert!(!sig.expose().contains(['+', '/', '=']));
    }

    #[test]
    fn a_wrong_key_fails() {
        let sig = generate(&key(), app(), "administrator", TIME, 3_600);
        assert_eq!(
            verify(&Secret::new("another key"), sig.expose(), TIME),
            Err(UserSigError::BadSignature)
        );
    }

    #[test]
    fn tampered_fields_fail() {
        // Same HMAC, another identifier: re-encode the JSON by hand.
        let json = REFERENCE_JSON.replace("administrator", "administrat0r");
        let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(json.as_bytes()).unwrap();
        let forged = to_url_base64(&STANDARD.encode(encoder.finish().unwrap()));
        assert_eq!(decode(&forged).unwrap().identifier, "administrat0r");
        assert_eq!(
            verify(&key(), &forged, TIME),
            Err(UserSigError::BadSignature)
        );
    }

    #[test]
    fn a_tampered_signature_fails() {
        let json = REFERENCE_JSON.replace("yLAe+", "yLAf+");
        let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(json.as_bytes()).unwrap();
        let forged = to_url_base64(&STANDARD.encode(encoder.finish().unwrap()));
        assert_eq!(
            verify(&key(), &forged, TIME),
            Err(UserSigError::BadSignature)
        );
    }

    #[test]
    fn an_expired_signature_fails() {
        assert_eq!(
            verify(&key(), REFERENCE, TIME + 86_400 + 1),
            Err(UserSigError::Expired)
        );
        assert!(verify(&key(), REFERENCE, TIME + 86_400).is_ok());
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(decode("not base64!"), Err(UserSigError::Encoding));
        assert_eq!(decode("aGVsbG8_"), Err(UserSigError::Encoding));
        let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(br#"{"TLS.ver": "1.0"}"#).unwrap();
        let old = to_url_base64(&STANDARD.encode(encoder.finish().unwrap()));
        assert_eq!(decode(&old), Err(UserSigError::Version));
    }

    #[test]
    fn a_zlib_bomb_is_refused() {
        let json = format!(r#"{{"TLS.ver": "2.0", "pad": "{}"}}"#, " ".repeat(1 << 20));
        let mut encoder = ZlibEncoder::new(Vec::new(), Compression::best());
        encoder.write_all(json.as_bytes()).unwrap();
        let bomb = to_url_base64(&STANDARD.encode(encoder.finish().unwrap()));
        assert_eq!(decode(&bomb), Err(UserSigError::Malformed("too large")));
    }

    #[test]
    fn python_escaping() {
        assert_eq!(python_json_string("a\"b\\c\n"), r#""a\"b\\c\n""#);
        assert_eq!(python_json_string("ü😀"), r#""\u00fc\ud83d\ude00""#);
    }

    #[test]
    fn the_cache_reuses_until_close_to_expiry() {
        let cache = UserSigCache::with_lifetime(key(), app(), "administrator", 86_400, 3_600);
        let first = cache.get_at(TIME);
        assert_eq!(first, cache.get_at(TIME + 1));
        assert_eq!(first, cache.get_at(TIME + 86_400 - 3_601));
        let second = cache.get_at(TIME + 86_400 - 3_600);
        assert_ne!(first, second);
        assert_eq!(decode(second.expose()).unwrap().time, TIME + 86_400 - 3_600);
        // A clock that stepped back gets a fresh signature, not one from its future.
        let third = cache.get_at(TIME);
        assert_eq!(decode(third.expose()).unwrap().time, TIME);
    }

    #[test]
    fn the_key_stays_out_of_debug_output() {
        let cache = UserSigCache::new(key(), app(), "administrator");
        let sig = cache.get();
        let shown = format!("{cache:?} {sig:?}");
        assert!(!shown.contains(KEY));
        assert!(!shown.contains(sig.expose()));
    }
}
