// The console's page (docs/console.md). Every value that came from a callback is written as
// text (textContent), never as HTML: room and user ids are chosen by Tencent's users.
"use strict";

const PAGE_SIZE = 50;
const state = {
  rooms: new Map(), // key -> {sdk_app_id, room_id, room_name, product, members}
  page: 0,
  filter: "",
  open: null, // {key, app, room, cursor, members: Map(user -> entered_at)}
  source: null,
  cursor: 0, // the feed position the page has followed to (the last event id)
  refetch: null,
};

const key = (app, room) => app + "\u0000" + room;
const $ = (id) => document.getElementById(id);

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  return node;
}

function row(cells, attrs) {
  const tr = el("tr", undefined, attrs);
  for (const cell of cells) {
    const td = el("td");
    if (cell instanceof Node) td.appendChild(cell);
    else td.textContent = cell === null || cell === undefined ? "" : String(cell);
    tr.appendChild(td);
  }
  return tr;
}

function fill(tableId, rows) {
  const body = $(tableId).querySelector("tbody");
  body.replaceChildren(...rows);
}

const time = (t) => (t ? new Date(t).toLocaleString() : "");

async function getJson(path) {
  const answer = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (answer.status === 401) {
    location.reload(); // the session ended: the sign-in form
    throw new Error("signed out");
  }
  if (!answer.ok) throw new Error(path + ": " + answer.status);
  return answer.json();
}

async function loadOverview() {
  const o = await getJson("/console/api/overview");
  const health = $("health");
  const items = [
    ["database", o.database],
    ["journal: pending", o.journal_depth],
    ["journal: parked", o.journal_parked],
    ["callback signature", o.signed_callbacks ? "signed (CALLBACK_TOKEN set)" : "not signed"],
    ["apps", o.apps.join(", ")],
    ["drift repair", o.drift_repair ? "on" : "off"],
    ["drift repair REST errors (this process)", o.drift_rest_errors],
  ];
  health.replaceChildren(...items.flatMap(([k, v]) => [el("dt", k), el("dd", v)]));
  fill("setup", o.arrivals.map((a) =>
    row([a.command, a.today, a.last_at ? time(a.last_at) : "not in 30 days"],
        a.quiet ? { class: "missing" } : {})));
  const tencent = o.tencent_check;
  $("tencent-off").hidden = Boolean(tencent);
  $("tencent-status").textContent = tencent
    ? tencent.status + (tencent.checked_at ? " at " + time(tencent.checked_at) : "")
    : "";
  $("tencent-check").replaceChildren(...((tencent && tencent.lines) || []).map((line) =>
    el("li", line, / (not configured|url not ours|not https|commands off|not asked): /.test(line)
      ? { class: "missing" } : {})));
  fill("refusals", o.refusals.map((r) => {
    const show = el("button", "body", { type: "button" });
    show.addEventListener("click", () => showBody(r.id));
    return row([time(r.received_at), r.error_code, r.callback_command, r.error_info, show]);
  }));
  fill("corrections", o.corrections.map((c) =>
    row([time(c.event_at), c.room_id, c.kind, c.member_list.join(", ")])));
}

async function showBody(id) {
  const b = await getJson("/console/api/refusal/" + encodeURIComponent(id));
  const pre = $("refusal-body");
  pre.textContent = b.body;
  pre.hidden = false;
}

function renderRooms() {
  const all = [...state.rooms.values()]
    .filter((r) => r.members > 0 && (!state.filter || r.room_id.includes(state.filter)))
    .sort((a, b) => b.members - a.members || (a.room_id < b.room_id ? -1 : 1));
  const pages = Math.max(1, Math.ceil(all.length / PAGE_SIZE));
  state.page = Math.min(state.page, pages - 1);
  const shown = all.slice(state.page * PAGE_SIZE, (state.page + 1) * PAGE_SIZE);
  fill("rooms", shown.map((r) => {
    const tr = row([r.sdk_app_id, r.room_id, r.room_name, r.product, r.members], { class: "clickable" });
    tr.addEventListener("click", () => openRoom(r.sdk_app_id, r.room_id));
    return tr;
  }));
  $("room-count").textContent = all.length + " with members";
  $("page").textContent = "page " + (state.page + 1) + " of " + pages;
}

async function loadRooms() {
  const r = await getJson("/console/api/rooms");
  state.rooms.clear();
  for (const room of r.rooms) state.rooms.set(key(room.sdk_app_id, room.room_id), room);
  renderRooms();
  return r.cursor;
}

function renderMembers() {
  const list = [...state.open.members.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1));
  $("room-members").replaceChildren(...list.map(([user, at]) => el("li", user + (at ? " (since " + time(at) + ")" : ""))));
}

async function openRoom(app, room) {
  const k = key(app, room);
  const other = !state.open || state.open.key !== k;
  // The stream names the open room (its changes come whole): stop it before reading the room,
  // so that the room's cursor is at or past the stream's and no change falls between them.
  if (other && state.source) state.source.close();
  const q = "?app=" + encodeURIComponent(app) + "&room=" + encodeURIComponent(room);
  const r = await getJson("/console/api/room" + q);
  state.open = {
    key: k, app, room, cursor: r.cursor,
    members: new Map(r.members.map((m) => [m.user_id, m.entered_at])),
  };
  if (other) follow(state.cursor);
  $("room-section").hidden = false;
  $("room-title").textContent = room + " (app " + app + ")";
  renderMembers();
  fill("room-sessions", r.sessions.map((s) => row([
    s.session_no, time(s.started_at), s.ended_at ? time(s.ended_at) + " (" + s.end_cause + ")" : "open",
    s.peak_members, s.unique_members,
    s.attendance.map((a) => a.user_id + ": " + Math.round(a.present_ms / 1000) + " s").join(", "),
  ])));
  fill("room-seats", r.seats.map((s) => row([
    s.seat_index, s.member_account,
    [s.is_taken_disabled && "locked", s.is_video_disabled && "no video", s.is_audio_disabled && "no audio"].filter(Boolean).join(", "),
  ])));
  fill("room-history", r.history.map((h) => row([time(h.event_at), h.callback_command, h.event_type, h.member_list.join(", ")])));
}

// A `rooms` event: how each changed room's member count moved.
function applyRooms(data) {
  for (const [app, roomId, moved] of data.rooms) {
    const k = key(app, roomId);
    let room = state.rooms.get(k);
    if (!room) {
      room = { sdk_app_id: app, room_id: roomId, room_name: null, product: "", members: 0 };
      state.rooms.set(k, room);
    }
    room.members = Math.max(0, room.members + moved);
    if (room.members === 0) state.rooms.delete(k);
  }
}

// A `change` event: one change of the open room.
function apply(change) {
  const open = state.open;
  if (open && open.key === key(change.sdk_app_id, change.room_id) && change.seq > open.cursor) {
    open.cursor = change.seq;
    if (change.kind === "member.entered") change.user_ids.forEach((u) => open.members.set(u, change.event_at));
    else if (change.kind === "member.left") change.user_ids.forEach((u) => open.members.delete(u));
    else if (!state.refetch) {
      // Sessions, seats, history: read again once the burst is over.
      state.refetch = setTimeout(() => { state.refetch = null; openRoom(open.app, open.room); }, 2000);
    }
    renderMembers();
  }
}

let renderPending = false;
function scheduleRender() {
  if (renderPending) return;
  renderPending = true;
  requestAnimationFrame(() => { renderPending = false; renderRooms(); });
}

function follow(cursor) {
  if (state.source) state.source.close();
  state.cursor = cursor;
  const open = state.open ? "&app=" + encodeURIComponent(state.open.app) + "&room=" + encodeURIComponent(state.open.room) : "";
  const source = new EventSource("/console/events?after=" + encodeURIComponent(cursor) + open);
  state.source = source;
  const live = $("live");
  const seen = (e) => { if (e.lastEventId) state.cursor = Number(e.lastEventId); };
  source.addEventListener("open", () => { live.textContent = "live"; live.className = "pill up"; });
  source.addEventListener("change", (e) => { seen(e); apply(JSON.parse(e.data)); });
  source.addEventListener("rooms", (e) => { seen(e); applyRooms(JSON.parse(e.data)); scheduleRender(); });
  // The feed no longer has our position (retention): start again from a snapshot.
  source.addEventListener("gone", () => { source.close(); start(); });
  source.addEventListener("error", () => {
    live.textContent = "reconnecting…"; live.className = "pill";
    // A session that ended answers 401: the sign-in form.
    getJson("/console/api/overview").catch(() => {});
  });
}

async function start() {
  let cursor;
  try {
    cursor = await loadRooms();
  } catch (error) {
    // Busy (503: readers take turns) or the database down: try again shortly.
    setTimeout(start, 2000);
    return;
  }
  const open = state.open;
  state.open = null; // read again: it may have changed past the new cursor
  follow(cursor);
  if (open) openRoom(open.app, open.room);
}

document.addEventListener("DOMContentLoaded", () => {
  $("room-filter").addEventListener("input", (e) => { state.filter = e.target.value; state.page = 0; renderRooms(); });
  $("prev").addEventListener("click", () => { state.page = Math.max(0, state.page - 1); renderRooms(); });
  $("next").addEventListener("click", () => { state.page += 1; renderRooms(); });
  loadOverview();
  setInterval(loadOverview, 10000);
  start();
});
