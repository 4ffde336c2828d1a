//! Which callbacks may share a transaction, and which may not be written at the same time
//! (docs/durability.md#the-writer, docs/scaling.md#citus).
//!
//! Every callback has a [`Group`]: its room on plain PostgreSQL; on Citus, the shard that holds
//! its room's rows, and the node that holds that shard. Two transactions in flight never share
//! a group's key, so a process's writers never wait on each other's room locks; one
//! transaction holds only groups of one node, so Citus commits it in one phase rather than
//! two. The layout is a hint for speed only: a stale one (a shard moved meanwhile) costs a
//! two-phase commit, never a wrong result, because every write locks its rooms itself.

use std::{
    hash::{Hash, Hasher},
    sync::{Arc, RwLock},
};

use sqlx::PgPool;

use super::Dialect;
use crate::callback::Callback;

/// A callback's group: `key` is what two concurrent transactions may not share, `node` what
/// every callback of one transaction shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Group {
    pub key: u64,
    pub node: i32,
}

/// One shard of the room tables: the hash values of the room ids it holds, and its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shard {
    id: i64,
    min_hash: i32,
    max_hash: i32,
    node: i32,
}

/// The room tables' distribution: no shards on plain PostgreSQL.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// Sorted by hash range.
    shards: Vec<Shard>,
    /// Read from the database (the default, before the first read, knows nothing).
    loaded: bool,
}

impl Layout {
    /// Reads the distribution (the `room_shards()` function of the migrations).
    pub async fn load(pool: &PgPool) -> Result<Self, sqlx::Error> {
        let rows = sqlx::query!(
            r#"SELECT shard_id AS "id!", min_hash AS "min_hash!", max_hash AS "max_hash!",
                      node_group AS "node!"
               FROM room_shards()"#
        )
        .fetch_all(pool)
        .await?;
        let mut shards: Vec<Shard> = rows
            .into_iter()
            .map(|r| Shard {
                id: r.id,
                min_hash: r.min_hash,
                max_hash: r.max_hash,
                node: r.node,
            })
            .collect();
        shards.sort_by_key(|s| s.min_hash);
        Ok(Self {
            shards,
            loaded: true,
        })
    }

    /// Whether it was read from the database (not the default of a writer that has not read it
    /// yet).
    pub fn is_loaded(&self) -> bool {
        self.loaded
    }

    pub fn is_distributed(&self) -> bool {
        !self.shards.is_empty()
    }

    /// The statements' form, when known: Citus's where the room tables are distributed; else
    /// the first statement of a batch asks (the layout may not be read yet).
    pub fn dialect(&self) -> Option<Dialect> {
        self.is_distributed().then_some(Dialect::Citus)
    }

    pub fn group(&self, callback: &Callback) -> Group {
        if self.shards.is_empty() {
            return Group {
                key: room_key(callback),
                node: 0,
            };
        }
        // As the migrations store it: a callback without a room goes under ''.
        let room = callback.room_id.as_ref().map_or("", |r| r.as_str());
        match self.shard_of(room) {
            Some((shard, node)) => Group {
                key: shard as u64,
                node,
            },
            // Not covered (the catalog changed under us): a group of its own, on no known node.
            None => Group {
                key: room_key(callback),
                node: -1,
            },
        }
    }

    /// The shard that holds `room`'s rows, and its node group (as Citus routes it).
    pub fn shard_of(&self, room: &str) -> Option<(i64, i32)> {
        let hash = hashtext(room.as_bytes());
        let at = self.shards.partition_point(|s| s.max_hash < hash);
        let shard = self.shards.get(at).filter(|s| s.min_hash <= hash)?;
        Some((shard.id, shard.node))
    }
}

/// The layout that writers read and a background task refreshes.
#[derive(Clone, Default)]
pub struct SharedLayout(Arc<RwLock<Arc<Layout>>>);

impl SharedLayout {
    pub fn get(&self) -> Arc<Layout> {
        self.0.read().expect("layout lock").clone()
    }

    /// Reloads it; on failure the last one stays (it is only a hint).
    pub async fn refresh(&self, pool: &PgPool) {
        match Layout::load(pool).await {
            Ok(layout) => *self.0.write().expect("layout lock") = Arc::new(layout),
            Err(error) => {
                tracing::debug!(error = %crate::telemetry::error_chain(&error), "room layout not refreshed")
            }
        }
    }
}

/// A callback's room on plain PostgreSQL (every copy of one callback has the same): the
/// callbacks that change a room's view by app and room, the others by dedup key.
fn room_key(callback: &Callback) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    match callback.locked_room() {
        Some(room) => room.hash(&mut hasher),
        None => callback.dedup_key().hash(&mut hasher),
    }
    hasher.finish()
}

/// PostgreSQL's `hashtext()` for a deterministic collation (its `hash_bytes`, Bob Jenkins's
/// lookup3 as PostgreSQL adapted it, little-endian), which Citus applies to a text
/// distribution column. Checked against the server's own in the tests.
pub fn hashtext(key: &[u8]) -> i32 {
    let len = key.len() as u32;
    let mut a = 0x9e37_79b9_u32.wrapping_add(len).wrapping_add(3_923_095);
    let (mut b, mut c) = (a, a);
    let word = |k: &[u8]| u32::from_le_bytes([k[0], k[1], k[2], k[3]]);
    let mut k = key;
    while k.len() >= 12 {
        a = a.wrapping_add(word(&k[0..]));
        b = b.wrapping_add(word(&k[4..]));
        c = c.wrapping_add(word(&k[8..]));
        mix(&mut a, &mut b, &mut c);
        k = &k[12..];
    }
    // The last 11 bytes or fewer; c's lowest byte is left out (lookup3 kept it for the length).
    let byte = |i: usize, shift: u32| u32::from(k[i]) << shift;
    let n = k.len();
    if n >= 9 {
        for i in (8..n).rev() {
            c = c.wrapping_add(byte(i, 8 * (i as u32 - 7)));
        }
    }
    for i in (4..n.min(8)).rev() {
        b = b.wrapping_add(byte(i, 8 * (i as u32 - 4)));
    }
    for i in (0..n.min(4)).rev() {
        a = a.wrapping_add(byte(i, 8 * i as u32));
    }
    finish(&mut a, &mut b, &mut c);
    c as i32
}

fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

fn finish(a: &mut u32, b: &mut u32, c: &mut u32) {
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(14));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(11));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(25));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(16));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(4));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(14));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(24));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(shards: &[(i64, i32, i32, i32)]) -> Layout {
        Layout {
            shards: shards
                .iter()
                .map(|&(id, min_hash, max_hash, node)| Shard {
                    id,
                    min_hash,
                    max_hash,
                    node,
                })
                .collect(),
            loaded: true,
        }
    }

    /// Strings of every length up to 40 (all of lookup3's tail cases, and several rounds),
    /// with bytes above 0x7f, against the server's own `hashtext()`.
    #[sqlx::test(migrations = false)]
    async fn hashtext_is_the_servers(pool: PgPool) {
        let mut keys: Vec<String> = (0..=40)
            .map(|n| {
                (0..n)
                    .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
                    .collect()
            })
            .collect();
        keys.extend(
            [
                "房间-1",
                "ünïcødé",
                "room_123456789012",
                "\u{7f}\u{80}\u{ff}",
            ]
            .map(String::from),
        );
        for n in [100, 257] {
            keys.push("房".repeat(n));
        }
        for key in &keys {
            let server = sqlx::query_scalar!("SELECT hashtext($1)", key)
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(Some(hashtext(key.as_bytes())), server, "hashtext({key:?})");
        }
    }

    #[test]
    fn a_room_belongs_to_the_shard_whose_range_holds_its_hash() {
        let layout = layout(&[
            (101, i32::MIN, -1, 1),
            (102, 0, 1_000_000, 2),
            (103, 1_000_001, i32::MAX, 1),
        ]);
        for (room, at) in [("a", 0), ("b", 1), ("c", 2), ("d", 3), ("房间", 4)] {
            let body = serde_json::json!({
                "CallbackCommand": "Room.CallbackAfterMemberEnter", "RoomId": room,
                "MemberList_Account": ["u"], "EventTime": at + 1
            });
            let query = crate::callback::CallbackQuery {
                command: Some("Room.CallbackAfterMemberEnter".into()),
                ..Default::default()
            };
            let callback = crate::callback::parse_stored(
                1400000000,
                &query,
                body.to_string().as_bytes(),
                chrono::Utc::now(),
            )
            .unwrap();
            let hash = hashtext(room.as_bytes());
            let (shard, node) = match hash {
                h if h < 0 => (101, 1),
                h if h <= 1_000_000 => (102, 2),
                _ => (103, 1),
            };
            let group = layout.group(&callback);
            assert_eq!((group.key, group.node), (shard, node), "{room}: {hash}");
        }
    }

    #[test]
    fn on_plain_postgresql_every_room_is_its_own_group_on_one_node() {
        assert!(!Layout::default().is_distributed());
        assert!(layout(&[(1, i32::MIN, i32::MAX, 3)]).is_distributed());
    }
}
