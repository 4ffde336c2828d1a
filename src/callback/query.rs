//! The query string Tencent appends to the callback URL (SPEC §1.1). Keys are matched
//! case-insensitively because Tencent's own documents spell them several ways.

use super::Meta;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallbackQuery {
    pub sdk_app_id: Option<String>,
    pub command: Option<String>,
    pub client_ip: Option<String>,
    pub opt_platform: Option<String>,
    pub sign: Option<String>,
    pub request_time: Option<String>,
}

impl CallbackQuery {
    /// Never fails: a malformed pair is skipped, and the checks that need a value report it
    /// as missing.
    pub fn parse(raw: &str) -> Self {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw).unwrap_or_else(|_| {
            // One bad escape must not hide the other keys: fall back to pair by pair.
            raw.split('&')
                .filter_map(|pair| serde_urlencoded::from_str::<Vec<(String, String)>>(pair).ok())
                .flatten()
                .collect()
        });
        let mut query = Self::default();
        for (key, value) in pairs {
            let slot = match key.to_ascii_lowercase().as_str() {
                "sdkappid" => &mut query.sdk_app_id,
                "callbackcommand" | "webhookcommand" => &mut query.command,
                "clientip" => &mut query.client_ip,
                "optplatform" => &mut query.opt_platform,
                "sign" => &mut query.sign,
                "requesttime" => &mut query.request_time,
                _ => continue,
            };
            // The first occurrence wins, like most frameworks' query extractors.
            slot.get_or_insert(value);
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
}
