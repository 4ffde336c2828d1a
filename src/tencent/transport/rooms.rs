//! The reads of drift repair: a room's info, its member list (every page) and its seats, for
//! TUIRoomKit and TUILiveKit rooms.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::client::TencentClient;
use crate::{
    callback::{Id, SdkAppId, Seat},
    tencent::{
        answer::{self, LiveMembers, RoomDetails},
        answers::Answer,
        errors::{TencentError, malformed},
    },
};

/// Rooms and members.
pub const ROOM_SERVICE: &str = "room_engine_http_srv";
/// Seats (mics).
pub const MIC_SERVICE: &str = "room_engine_http_mic";
/// TUILiveKit's rooms and members.
pub const LIVE_SERVICE: &str = "live_engine_http_srv";

impl TencentClient {
    /// `room_engine_http_srv/get_room_info`. [`TencentError::RoomNotFound`] when the room is
    /// gone.
    pub async fn get_room_info(
        &self,
        app: SdkAppId,
        room: &Id,
    ) -> Result<Answer<RoomDetails>, TencentError> {
        self.room_info_of(ROOM_SERVICE, app, room).await
    }

    /// `live_engine_http_srv/get_room_info`: a TUILiveKit room, in the same shape.
    pub async fn get_live_room_info(
        &self,
        app: SdkAppId,
        room: &Id,
    ) -> Result<Answer<RoomDetails>, TencentError> {
        self.room_info_of(LIVE_SERVICE, app, room).await
    }

    /// `live_engine_http_srv/get_member_list`, every page. Tencent lists at most 1,000
    /// members of a larger room, and refreshes the list about every 40 s; `member_count` is
    /// its count of the whole room, so a caller can tell a cut list.
    pub async fn get_live_member_list(
        &self,
        app: SdkAppId,
        room: &Id,
    ) -> Result<Answer<LiveMembers>, TencentError> {
        let (members, pages) = self
            .member_pages(
                app,
                LIVE_SERVICE,
                "get_member_list",
                |next| json!({ "RoomId": room.as_str(), "Next": next }),
            )
            .await?;
        let member_count = answer::live_member_count(&pages)?;
        let data = LiveMembers {
            members,
            member_count,
        };
        Ok(Answer {
            data,
            raw: Value::Array(pages),
        })
    }

    /// Every page of a member list: the members in Tencent's order, each once, and the
    /// answers. `body` makes a page's request from the `Next` of the one before.
    async fn member_pages(
        &self,
        app: SdkAppId,
        service: &str,
        api: &str,
        body: impl Fn(&str) -> Value,
    ) -> Result<(Vec<Id>, Vec<Value>), TencentError> {
        let mut next = String::new();
        let mut pages = Vec::new();
        let mut members = Vec::new();
        let mut seen = HashSet::new();
        for _ in 0..self.options().max_member_pages {
            let raw = self.call(app, service, api, &body(&next)).await?;
            let (page, page_next) = answer::member_page(&raw)?;
            members.extend(page.into_iter().filter(|m| seen.insert(m.clone())));
            pages.push(raw);
            if page_next.is_empty() {
                return Ok((members, pages));
            }
            if page_next == next {
                return Err(malformed("Response.Next did not advance"));
            }
            next = page_next;
        }
        Err(TencentError::Malformed(format!(
            "the member list did not end within {} pages",
            self.options().max_member_pages
        )))
    }

    async fn room_info_of(
        &self,
        service: &str,
        app: SdkAppId,
        room: &Id,
    ) -> Result<Answer<RoomDetails>, TencentError> {
        let raw = self
            .call(
                app,
                service,
                "get_room_info",
                &json!({ "RoomId": room.as_str() }),
            )
            .await?;
        let data = answer::room_details(&raw)?;
        Ok(Answer { data, raw })
    }

    /// `room_engine_http_srv/get_room_member_list`, every page: the members in Tencent's order,
    /// each once.
    pub async fn get_room_member_list(
        &self,
        app: SdkAppId,
        room: &Id,
    ) -> Result<Answer<Vec<Id>>, TencentError> {
        let count = self.options().member_page_size.max(1);
        let (members, pages) = self
            .member_pages(
                app,
                ROOM_SERVICE,
                "get_room_member_list",
                |next| json!({ "RoomId": room.as_str(), "Count": count, "Next": next }),
            )
            .await?;
        Ok(Answer {
            data: members,
            raw: Value::Array(pages),
        })
    }

    /// `room_engine_http_mic/get_seat_list`: every seat, free ones with `member: None`.
    pub async fn get_seat_list(
        &self,
        app: SdkAppId,
        room: &Id,
    ) -> Result<Answer<Vec<Seat>>, TencentError> {
        let raw = self
            .call(
                app,
                MIC_SERVICE,
                "get_seat_list",
                &json!({ "RoomId": room.as_str() }),
            )
            .await?;
        let data = answer::seats_of_answer(&raw)?;
        Ok(Answer { data, raw })
    }
}
