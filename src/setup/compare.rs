//! What Tencent's configuration lacks, and what `configure` would change: no I/O.

use std::fmt;

use reqwest::Url;

use crate::{
    callback::{Command, Product},
    tencent::CallbackConfig,
};

/// The products a command looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    Room,
    Live,
    Both,
}

impl Selection {
    pub fn products(self) -> &'static [Product] {
        match self {
            Self::Room => &[Product::Room],
            Self::Live => &[Product::Live],
            Self::Both => &[Product::Room, Product::Live],
        }
    }

    /// One product named: its missing configuration is a finding, whatever the other has.
    fn named(self) -> bool {
        self != Self::Both
    }
}

/// The product whose callback configuration switches `command` on. Seat changes are
/// TUIRoomKit's (`Mic.*`); TUILiveKit's seats arrive as its own commands.
fn configured_under(command: &Command) -> Option<Product> {
    match command {
        Command::SeatInfoChanged => Some(Product::Room),
        other => other.product(),
    }
}

/// The canonical names of the commands roomsync handles of `product`, in
/// [`Command::HANDLED`]'s order.
pub fn handled_commands(product: Product) -> Vec<&'static str> {
    Command::HANDLED
        .into_iter()
        .filter(|name| configured_under(&Command::parse(name)) == Some(product))
        .collect()
}

/// Names as Tencent lists them, canonical (older aliases such as
/// `Room.CallbackUpdateRoomInfo` are the same command).
fn canonical(name: &str) -> String {
    Command::parse(name).as_str().to_owned()
}

/// Handled commands of `product` that `theirs` does not switch on.
fn commands_off(product: Product, theirs: &CallbackConfig) -> Vec<String> {
    let on: Vec<String> = theirs.commands.iter().map(|c| canonical(c)).collect();
    handled_commands(product)
        .into_iter()
        .filter(|name| !on.iter().any(|c| c == name))
        .map(str::to_owned)
        .collect()
}

/// Something that loses callbacks or exposes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The product has no callback configuration: Tencent sends its callbacks nowhere.
    NotConfigured,
    /// Tencent calls another URL than `PUBLIC_CALLBACK_URL` (scheme aside: see `NotHttps`).
    UrlNotOurs { theirs: String, ours: String },
    /// Tencent calls a URL that is not `https://`: callbacks travel in the clear.
    NotHttps { url: String },
    /// Handled commands of the product that are switched off (canonical names).
    CommandsOff(Vec<String>),
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotConfigured => f.write_str(
                "not configured: Tencent sends this product's callbacks nowhere (roomsync tencent configure)",
            ),
            Self::UrlNotOurs { theirs, ours } => write!(
                f,
                "url not ours: Tencent calls {theirs}, PUBLIC_CALLBACK_URL is {ours}"
            ),
            Self::NotHttps { url } => write!(
                f,
                "not https: Tencent calls {url} in the clear; use the https:// URL of the TLS proxy"
            ),
            Self::CommandsOff(commands) => write!(
                f,
                "commands off: {} (roomsync handles them: switch them on)",
                commands.join(", ")
            ),
        }
    }
}

/// Worth knowing, not a finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// No configuration, but another product of the app has one: the app uses that one.
    NotInUse,
    /// `PUBLIC_CALLBACK_URL` is unset, so Tencent's URL was not compared.
    UrlNotCompared,
    /// Switched on at Tencent, not handled by roomsync (stored as sent, nothing else).
    NotHandled(Vec<String>),
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotInUse => f.write_str(
                "not in use: no callback configuration (another product of this app has one)",
            ),
            Self::UrlNotCompared => {
                f.write_str("url not compared: set PUBLIC_CALLBACK_URL to compare it")
            }
            Self::NotHandled(commands) => write!(
                f,
                "switched on but not handled by roomsync (kept as sent): {}",
                commands.join(", ")
            ),
        }
    }
}

/// What one product of one app looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductCheck {
    pub product: Product,
    /// Tencent's configuration; `None`: there is none.
    pub config: Option<CallbackConfig>,
    pub findings: Vec<Finding>,
    pub notes: Vec<Note>,
}

/// Tencent calls `theirs` where roomsync is reached at `ours`: the same scheme, host (any
/// case), port (a default one written or not) and path. The query is not compared: Tencent
/// appends its own.
fn same_target(theirs: &Url, ours: &Url) -> bool {
    theirs.scheme() == ours.scheme()
        && theirs
            .host_str()
            .zip(ours.host_str())
            .is_some_and(|(a, b)| a.eq_ignore_ascii_case(b))
        && theirs.port_or_known_default() == ours.port_or_known_default()
        && theirs.path() == ours.path()
}

/// `theirs` points at `ours` once made `https://` (a plain-http URL with the default port is
/// the same endpoint behind the proxy): the scheme is `NotHttps`'s to report, not a second
/// finding.
fn same_but_scheme(theirs: &Url, ours: &Url) -> bool {
    let mut upgraded = theirs.clone();
    if upgraded.scheme() == "http" && upgraded.port().is_none() {
        // http → https between special schemes always succeeds.
        let _ = upgraded.set_scheme("https");
    }
    same_target(&upgraded, ours)
}

/// One product of one app. `absence_is_finding`: a missing configuration is a finding (else
/// the product is not in use).
pub fn compare(
    product: Product,
    theirs: Option<&CallbackConfig>,
    ours: Option<&Url>,
    absence_is_finding: bool,
) -> ProductCheck {
    let mut check = ProductCheck {
        product,
        config: theirs.cloned(),
        findings: Vec::new(),
        notes: Vec::new(),
    };
    let Some(theirs) = theirs else {
        if absence_is_finding {
            check.findings.push(Finding::NotConfigured);
        } else {
            check.notes.push(Note::NotInUse);
        }
        return check;
    };
    let parsed = Url::parse(theirs.url.trim()).ok();
    if parsed.as_ref().is_none_or(|u| u.scheme() != "https") {
        check.findings.push(Finding::NotHttps {
            url: theirs.url.clone(),
        });
    }
    match ours {
        None => check.notes.push(Note::UrlNotCompared),
        Some(ours) => {
            if !parsed.as_ref().is_some_and(|u| same_but_scheme(u, ours)) {
                check.findings.push(Finding::UrlNotOurs {
                    theirs: theirs.url.clone(),
                    ours: ours.to_string(),
                });
            }
        }
    }
    let off = commands_off(product, theirs);
    if !off.is_empty() {
        check.findings.push(Finding::CommandsOff(off));
    }
    let handled = handled_commands(product);
    let extra: Vec<String> = theirs
        .commands
        .iter()
        .filter(|c| !handled.contains(&canonical(c).as_str()))
        .cloned()
        .collect();
    if !extra.is_empty() {
        check.notes.push(Note::NotHandled(extra));
    }
    check
}

/// The products of one app that were asked for, each with Tencent's configuration (or none),
/// under the rule of the module: a product without configuration is a finding only when named,
/// or when none of the app's products has one.
pub fn compare_app(
    selection: Selection,
    configs: &[(Product, Option<CallbackConfig>)],
    ours: Option<&Url>,
) -> Vec<ProductCheck> {
    let absence_is_finding = selection.named() || configs.iter().all(|(_, c)| c.is_none());
    configs
        .iter()
        .map(|(product, config)| compare(*product, config.as_ref(), ours, absence_is_finding))
        .collect()
}

/// What `configure` does to one product of one app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Nothing,
    /// No configuration yet: `set_callback` with this one.
    Set(CallbackConfig),
    /// `update_callback` with `target`: the handled commands in `added` switched on, and the
    /// URL changed when `url` says from what to what.
    Update {
        target: CallbackConfig,
        added: Vec<String>,
        url: Option<(String, String)>,
    },
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Nothing => f.write_str("nothing to change"),
            Self::Set(target) => write!(
                f,
                "set: url {}; commands {}",
                target.url,
                target.commands.join(", ")
            ),
            Self::Update { added, url, .. } => {
                f.write_str("update: ")?;
                if !added.is_empty() {
                    write!(f, "add {}", added.join(", "))?;
                }
                if let Some((from, to)) = url {
                    if !added.is_empty() {
                        f.write_str("; ")?;
                    }
                    write!(f, "url {from} → {to}")?;
                }
                Ok(())
            }
        }
    }
}

/// What `configure` would change so that `product`'s callbacks reach `ours` with every handled
/// command on. Commands already on stay on, in Tencent's order and spelling (the one URL of an
/// app is roomsync's, but `configure` never switches anything off); the missing handled ones
/// are appended.
pub fn plan(product: Product, theirs: Option<&CallbackConfig>, ours: &Url) -> Plan {
    let Some(theirs) = theirs else {
        return Plan::Set(CallbackConfig {
            url: ours.to_string(),
            commands: handled_commands(product)
                .into_iter()
                .map(str::to_owned)
                .collect(),
        });
    };
    let added = commands_off(product, theirs);
    let url_ok = Url::parse(theirs.url.trim()).is_ok_and(|u| same_target(&u, ours));
    if added.is_empty() && url_ok {
        return Plan::Nothing;
    }
    let mut commands = theirs.commands.clone();
    commands.extend(added.iter().cloned());
    Plan::Update {
        target: CallbackConfig {
            // Tencent's own spelling stays when it is already ours.
            url: if url_ok {
                theirs.url.clone()
            } else {
                ours.to_string()
            },
            commands,
        },
        added,
        url: (!url_ok).then(|| (theirs.url.clone(), ours.to_string())),
    }
}

/// The callback token's line: Tencent's API does not expose the console's token, so a
/// mismatch cannot be seen from here (it shows as refused callbacks, 401).
pub fn token_note(signed: bool) -> &'static str {
    if signed {
        "callback token: not compared (Tencent's API does not expose it); roomsync checks signatures with CALLBACK_TOKEN: a different token in the console shows as callbacks refused with 401"
    } else {
        "callback token: not compared (Tencent's API does not expose it); CALLBACK_TOKEN is unset, so roomsync accepts unsigned callbacks"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &str = "https://rooms.example.com/callback";

    fn ours() -> Url {
        Url::parse(OURS).unwrap()
    }

    fn config(url: &str, commands: &[&str]) -> CallbackConfig {
        CallbackConfig {
            url: url.into(),
            commands: commands.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    fn all(product: Product) -> Vec<&'static str> {
        handled_commands(product)
    }

    #[test]
    fn handled_commands_per_product() {
        assert_eq!(
            all(Product::Room),
            [
                "Room.CallbackAfterCreateRoom",
                "Room.CallbackAfterDestroyRoom",
                "Room.CallbackAfterUpdateRoomInfo",
                "Room.CallbackAfterMemberEnter",
                "Room.CallbackAfterMemberLeave",
                "Mic.CallbackAfterSeatInfoChanged",
            ]
        );
        assert_eq!(
            all(Product::Live),
            [
                "Live.CallbackAfterCreateRoom",
                "Live.CallbackAfterDestroyRoom",
                "Live.CallbackAfterUpdateRoomInfo",
                "Live.CallbackAfterMemberStateChanged",
            ]
        );
    }

    #[test]
    fn a_correct_configuration_has_no_finding() {
        for product in [Product::Room, Product::Live] {
            let theirs = config(OURS, &all(product));
            let check = compare(product, Some(&theirs), Some(&ours()), true);
            assert_eq!(check.findings, [], "{product:?}");
            assert_eq!(check.notes, [], "{product:?}");
        }
        // The same endpoint written otherwise: host case, the default port, Tencent's query.
        for same in [
            "https://ROOMS.example.com/callback",
            "https://rooms.example.com:443/callback",
            "https://rooms.example.com/callback?from=tencent",
        ] {
            let check = compare(
                Product::Room,
                Some(&config(same, &all(Product::Room))),
                Some(&ours()),
                true,
            );
            assert_eq!(check.findings, [], "{same}");
        }
    }

    #[test]
    fn older_command_names_count_as_on() {
        let mut commands = all(Product::Room);
        commands[2] = "Room.CallbackUpdateRoomInfo";
        let check = compare(
            Product::Room,
            Some(&config(OURS, &commands)),
            Some(&ours()),
            true,
        );
        assert_eq!(check.findings, []);
        assert_eq!(check.notes, []);
        let mut live = all(Product::Live);
        live[3] = "Live.CallbackMemberStateChanged";
        let check = compare(
            Product::Live,
            Some(&config(OURS, &live)),
            Some(&ours()),
            true,
        );
        assert_eq!(check.findings, []);
    }

    #[test]
    fn commands_off() {
        let theirs = config(
            OURS,
            &[
                "Room.CallbackAfterCreateRoom",
                "Room.CallbackAfterMemberEnter",
            ],
        );
        let check = compare(Product::Room, Some(&theirs), Some(&ours()), true);
        assert_eq!(
            check.findings,
            [Finding::CommandsOff(vec![
                "Room.CallbackAfterDestroyRoom".into(),
                "Room.CallbackAfterUpdateRoomInfo".into(),
                "Room.CallbackAfterMemberLeave".into(),
                "Mic.CallbackAfterSeatInfoChanged".into(),
            ])]
        );
        // Room's commands do not count for Live.
        let check = compare(
            Product::Live,
            Some(&config(OURS, &all(Product::Room))),
            Some(&ours()),
            true,
        );
        assert_eq!(
            check.findings,
            [Finding::CommandsOff(
                all(Product::Live).into_iter().map(str::to_owned).collect()
            )]
        );
    }

    #[test]
    fn another_url_is_not_ours() {
        for other in [
            "https://other.example.com/callback",
            "https://rooms.example.com/callbacks",
            "https://rooms.example.com/Callback",
            "https://rooms.example.com:8443/callback",
            "https://rooms.example.com/",
            "not a url",
        ] {
            let check = compare(
                Product::Room,
                Some(&config(other, &all(Product::Room))),
                Some(&ours()),
                true,
            );
            assert!(
                check.findings.contains(&Finding::UrlNotOurs {
                    theirs: other.into(),
                    ours: OURS.into()
                }),
                "{other}: {:?}",
                check.findings
            );
        }
    }

    #[test]
    fn plain_http_is_a_finding_of_its_own() {
        // Our endpoint but in the clear: one finding, not two.
        let theirs = config("http://rooms.example.com/callback", &all(Product::Room));
        let check = compare(Product::Room, Some(&theirs), Some(&ours()), true);
        assert_eq!(
            check.findings,
            [Finding::NotHttps {
                url: theirs.url.clone()
            }]
        );
        // Without PUBLIC_CALLBACK_URL it is still a finding.
        let check = compare(Product::Room, Some(&theirs), None, true);
        assert_eq!(
            check.findings,
            [Finding::NotHttps {
                url: theirs.url.clone()
            }]
        );
        assert_eq!(check.notes, [Note::UrlNotCompared]);
        // Another port over http is another endpoint too.
        let elsewhere = config(
            "http://rooms.example.com:8080/callback",
            &all(Product::Room),
        );
        let check = compare(Product::Room, Some(&elsewhere), Some(&ours()), true);
        assert_eq!(check.findings.len(), 2, "{:?}", check.findings);
    }

    #[test]
    fn unset_public_url_is_a_note() {
        let check = compare(
            Product::Live,
            Some(&config("https://anything.example/x", &all(Product::Live))),
            None,
            true,
        );
        assert_eq!(check.findings, []);
        assert_eq!(check.notes, [Note::UrlNotCompared]);
    }

    #[test]
    fn unhandled_commands_are_a_note() {
        let mut commands = all(Product::Room);
        commands.push("Room.CallbackAfterSendMessage");
        let check = compare(
            Product::Room,
            Some(&config(OURS, &commands)),
            Some(&ours()),
            true,
        );
        assert_eq!(check.findings, []);
        assert_eq!(
            check.notes,
            [Note::NotHandled(vec![
                "Room.CallbackAfterSendMessage".into()
            ])]
        );
    }

    #[test]
    fn a_product_without_configuration() {
        let room = config(OURS, &all(Product::Room));
        // Both asked, one configured: the other is not in use.
        let checks = compare_app(
            Selection::Both,
            &[(Product::Room, Some(room.clone())), (Product::Live, None)],
            Some(&ours()),
        );
        assert_eq!(checks[0].findings, []);
        assert_eq!(checks[1].findings, []);
        assert_eq!(checks[1].notes, [Note::NotInUse]);
        // Neither configured: both are findings.
        let checks = compare_app(
            Selection::Both,
            &[(Product::Room, None), (Product::Live, None)],
            Some(&ours()),
        );
        for check in &checks {
            assert_eq!(check.findings, [Finding::NotConfigured]);
        }
        // Named: a finding whatever the other product has.
        let checks = compare_app(Selection::Live, &[(Product::Live, None)], Some(&ours()));
        assert_eq!(checks[0].findings, [Finding::NotConfigured]);
    }

    #[test]
    fn plan_from_nothing_sets_every_handled_command() {
        assert_eq!(
            plan(Product::Live, None, &ours()),
            Plan::Set(config(OURS, &all(Product::Live)))
        );
        let text = plan(Product::Room, None, &ours()).to_string();
        assert!(text.starts_with("set: url https://rooms.example.com/callback; commands Room.CallbackAfterCreateRoom, "), "{text}");
    }

    #[test]
    fn plan_keeps_extras_and_adds_what_is_off() {
        let theirs = config(
            "https://old.example.com/cb",
            &[
                "Room.CallbackAfterSendMessage",
                "Room.CallbackUpdateRoomInfo",
            ],
        );
        let plan = plan(Product::Room, Some(&theirs), &ours());
        let Plan::Update { target, added, url } = &plan else {
            panic!("{plan:?}")
        };
        assert_eq!(
            added,
            &[
                "Room.CallbackAfterCreateRoom",
                "Room.CallbackAfterDestroyRoom",
                "Room.CallbackAfterMemberEnter",
                "Room.CallbackAfterMemberLeave",
                "Mic.CallbackAfterSeatInfoChanged",
            ]
        );
        assert_eq!(&target.commands[..2], &theirs.commands[..]);
        assert_eq!(target.commands.len(), 7);
        assert_eq!(target.url, OURS);
        assert_eq!(
            url,
            &Some(("https://old.example.com/cb".into(), OURS.into()))
        );
        assert_eq!(
            plan.to_string(),
            "update: add Room.CallbackAfterCreateRoom, Room.CallbackAfterDestroyRoom, \
             Room.CallbackAfterMemberEnter, Room.CallbackAfterMemberLeave, \
             Mic.CallbackAfterSeatInfoChanged; url https://old.example.com/cb → https://rooms.example.com/callback"
        );
    }

    #[test]
    fn plan_changes_only_what_differs() {
        // Already right, spelt otherwise: nothing to change.
        let right = config(
            "https://ROOMS.example.com:443/callback",
            &all(Product::Room),
        );
        assert_eq!(plan(Product::Room, Some(&right), &ours()), Plan::Nothing);
        assert_eq!(Plan::Nothing.to_string(), "nothing to change");
        // Only the URL: http is changed to ours.
        let http = config("http://rooms.example.com/callback", &all(Product::Room));
        let Plan::Update { added, url, target } = plan(Product::Room, Some(&http), &ours()) else {
            panic!()
        };
        assert!(added.is_empty());
        assert_eq!(target.url, OURS);
        assert_eq!(url.unwrap().0, "http://rooms.example.com/callback");
        // Only commands: Tencent's URL kept as written.
        let partial = config(
            "https://Rooms.example.com/callback",
            &all(Product::Live)[..3],
        );
        let plan = plan(Product::Live, Some(&partial), &ours());
        let Plan::Update { added, url, target } = &plan else {
            panic!()
        };
        assert_eq!(added, &["Live.CallbackAfterMemberStateChanged"]);
        assert_eq!(url, &None);
        assert_eq!(target.url, partial.url);
        assert_eq!(
            plan.to_string(),
            "update: add Live.CallbackAfterMemberStateChanged"
        );
    }

    #[test]
    fn findings_read_as_lines() {
        let lines = [
            Finding::NotConfigured.to_string(),
            Finding::CommandsOff(vec!["A".into(), "B".into()]).to_string(),
            Finding::UrlNotOurs {
                theirs: "https://a/".into(),
                ours: OURS.into(),
            }
            .to_string(),
            Finding::NotHttps {
                url: "http://a/".into(),
            }
            .to_string(),
        ];
        for (line, start) in lines.iter().zip([
            "not configured",
            "commands off: A, B",
            "url not ours",
            "not https",
        ]) {
            assert!(line.starts_with(start) && !line.contains('\n'), "{line}");
        }
    }
}
