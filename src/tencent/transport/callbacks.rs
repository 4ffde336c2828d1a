//! Each product's callback configuration at Tencent (`room_config`, `live_config`): read it,
//! create it, replace it.

use serde_json::json;

use super::client::TencentClient;
use crate::{
    callback::{Product, SdkAppId},
    tencent::{
        answer::{self, CallbackConfig},
        answers::Answer,
        errors::{NO_CALLBACK_CONFIG, TencentError},
    },
};

/// TUIRoomKit's callback configuration.
pub const ROOM_CONFIG_SERVICE: &str = "room_config";
/// TUILiveKit's callback configuration.
pub const LIVE_CONFIG_SERVICE: &str = "live_config";

/// The service of `product`'s callback configuration calls (`get_callback`, `set_callback`,
/// `update_callback`).
pub fn callback_service(product: Product) -> &'static str {
    match product {
        Product::Room => ROOM_CONFIG_SERVICE,
        Product::Live => LIVE_CONFIG_SERVICE,
    }
}

impl TencentClient {
    /// `{room,live}_config/get_callback`: where Tencent sends `product`'s callbacks and which
    /// are switched on; `None` when the app has no configuration for it (`ErrorCode` 100301).
    pub async fn get_callback(
        &self,
        app: SdkAppId,
        product: Product,
    ) -> Result<Option<Answer<CallbackConfig>>, TencentError> {
        let raw = match self
            .call(app, callback_service(product), "get_callback", &json!({}))
            .await
        {
            Err(TencentError::Api {
                code: NO_CALLBACK_CONFIG,
                ..
            }) => return Ok(None),
            other => other?,
        };
        let data = answer::callback_config(&raw)?;
        Ok(Some(Answer { data, raw }))
    }

    /// `{room,live}_config/set_callback`: creates `product`'s configuration; `ErrorCode` 100300
    /// ([`CALLBACK_CONFIG_EXISTS`](crate::tencent::CALLBACK_CONFIG_EXISTS)) when there is one already.
    pub async fn set_callback(
        &self,
        app: SdkAppId,
        product: Product,
        config: &CallbackConfig,
    ) -> Result<Answer<()>, TencentError> {
        self.write_callback(app, product, "set_callback", config)
            .await
    }

    /// `{room,live}_config/update_callback`: replaces the URL and the whole command list;
    /// `ErrorCode` 100301 ([`NO_CALLBACK_CONFIG`]) when there is no
    /// configuration to change.
    pub async fn update_callback(
        &self,
        app: SdkAppId,
        product: Product,
        config: &CallbackConfig,
    ) -> Result<Answer<()>, TencentError> {
        self.write_callback(app, product, "update_callback", config)
            .await
    }

    async fn write_callback(
        &self,
        app: SdkAppId,
        product: Product,
        api: &str,
        config: &CallbackConfig,
    ) -> Result<Answer<()>, TencentError> {
        let body = json!({ "Url": config.url, "CallbackCommandList": config.commands });
        let raw = self
            .call(app, callback_service(product), api, &body)
            .await?;
        Ok(Answer { data: (), raw })
    }
}
