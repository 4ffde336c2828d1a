//! The query string Tencent appends to the callback URL (docs/protocol.md#transport-and-query-string). Keys are matched
//! case-insensitively because Tencent's own documents spell them several ways.

use percent_encoding::percent_decode_str;

use super::Meta;

/// `application/x-www-form-urlencoded` decoding to bytes: `+` is a space, `%XX` a byte.
fn decode(text: &str) -> Vec<u8> {
    let spaced = text.replace('+', " ");
    percent_decode_str(&spaced).collect()
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallbackQuery {
    pub sdk_app_id: Option<String>,
    pub command: Option<String>,
    pub client_ip: Option<String>,
    pub opt_platform: Option<String>,
    pub sign: Option<String>,
    pub request_time: Option<String>,
    /// Stored parameters whose percent-decoded value is not UTF-8 (kept out of the fields
    /// above rather than stored with replacement characters).
    pub not_utf8: Vec<&'static str>,
}

impl CallbackQuery {
    /// Never fails: a malformed pair is skipped, and the checks that need a value report it
    /// as missing.
    pub fn parse(raw: &str) -> Self {
        let mut query = Self::default();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode(key);
            let (slot, name) = match String::from_utf8_lossy(&key).to_ascii_lowercase().as_str() {
                "sdkappid" => (&mut query.sdk_app_id, "SdkAppid"),
                "callbackcommand" | "webhookcommand" => (&mut query.command, "CallbackCommand"),
                "clientip" => (&mut query.client_ip, "ClientIP"),
                "optplatform" => (&mut query.opt_platform, "OptPlatform"),
                "sign" => (&mut query.sign, "Sign"),
                "requesttime" => (&mut query.request_time, "RequestTime"),
                _ => continue,
            };
            // The first occurrence wins, like most frameworks' query extractors.
            if slot.is_some() || query.not_utf8.contains(&name) {
                continue;
            }
            match String::from_utf8(decode(value)) {
                Ok(text) => *slot = Some(text),
                Err(_) => query.not_utf8.push(name),
            }
        }
        query
    }

    pub fn meta(&self) -> Meta {
        Meta {
            client_ip: self.client_ip.clone(),
            opt_platform: self.opt_platform.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_case_insensitive() {
        let q = CallbackQuery::parse(
            "SDKAPPID=1400000001&callbackcommand=Room.CallbackAfterMemberEnter&ContentType=json&clientip=1.2.3.4&OPTPLATFORM=iOS&sign=ab&REQUESTTIME=12",
        );
        assert_eq!(q.sdk_app_id.as_deref(), Some("1400000001"));
        assert_eq!(q.command.as_deref(), Some("Room.CallbackAfterMemberEnter"));
        assert_eq!(q.client_ip.as_deref(), Some("1.2.3.4"));
        assert_eq!(q.opt_platform.as_deref(), Some("iOS"));
        assert_eq!(q.sign.as_deref(), Some("ab"));
        assert_eq!(q.request_time.as_deref(), Some("12"));
    }

    #[test]
    fn webhook_command_is_an_alias() {
        let q = CallbackQuery::parse("SdkAppId=1&WebhookCommand=Room.X");
        assert_eq!(q.command.as_deref(), Some("Room.X"));
    }

    #[test]
    fn empty_and_odd_values_survive() {
        let q = CallbackQuery::parse("SdkAppid=1&ClientIP=&OptPlatform=Some%20Thing&junk");
        assert_eq!(q.client_ip.as_deref(), Some(""));
        assert_eq!(q.opt_platform.as_deref(), Some("Some Thing"));
        assert_eq!(CallbackQuery::parse(""), CallbackQuery::default());
    }

    #[test]
    fn values_that_are_not_utf8_are_flagged_not_mangled() {
        let q =
            CallbackQuery::parse("SdkAppid=1&ClientIP=%FF%FE&ClientIP=1.2.3.4&OptPlatform=a+b%2B");
        assert_eq!(q.client_ip, None, "a later duplicate does not replace it");
        assert_eq!(q.not_utf8, vec!["ClientIP"]);
        assert_eq!(q.opt_platform.as_deref(), Some("a b+"));
        // A broken escape is kept as sent, like other form decoders do.
        assert_eq!(
            CallbackQuery::parse("ClientIP=%zz").client_ip.as_deref(),
            Some("%zz")
        );
    }
}
