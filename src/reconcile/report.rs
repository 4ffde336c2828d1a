//! What one check found, as the `roomsync reconcile` command prints it and the log shows it
//! (docs/drift-repair.md#roomsync-reconcile).

use std::fmt;

/// What one check found (and, unless it was a dry run, stored).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RoomReport {
    pub enter: Vec<String>,
    pub leave: Vec<String>,
    pub destroyed: bool,
    pub seats: bool,
    /// Differences left alone because of the grace period.
    pub held_back: Vec<String>,
    /// The view has no such room: nothing to compare, nothing stored.
    pub unknown: bool,
    /// Tencent's list was cut (a Live room of more than 1,000): members absent from it were
    /// not taken for gone.
    pub list_cut: bool,
}

impl RoomReport {
    pub fn differs(&self) -> bool {
        !self.enter.is_empty() || !self.leave.is_empty() || self.destroyed || self.seats
    }
}

impl fmt::Display for RoomReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.unknown {
            return f.write_str("not a room of the view: nothing compared");
        }
        let mut parts = Vec::new();
        if self.destroyed {
            parts.push("gone at Tencent: destroy".to_owned());
        }
        if !self.enter.is_empty() {
            parts.push(format!("enter {:?}", self.enter));
        }
        if !self.leave.is_empty() {
            parts.push(format!("leave {:?}", self.leave));
        }
        if self.seats {
            parts.push("seats take Tencent's list".to_owned());
        }
        if !self.held_back.is_empty() {
            parts.push(format!(
                "held back by the grace period {:?}",
                self.held_back
            ));
        }
        if self.list_cut {
            parts.push("Tencent's member list was cut: no leaves taken from it".to_owned());
        }
        if parts.is_empty() {
            f.write_str("no difference")
        } else {
            f.write_str(&parts.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_says_what_differs() {
        assert_eq!(RoomReport::default().to_string(), "no difference");
        assert!(!RoomReport::default().differs());
        let unknown = RoomReport {
            unknown: true,
            ..RoomReport::default()
        };
        assert_eq!(
            unknown.to_string(),
            "not a room of the view: nothing compared"
        );
        let report = RoomReport {
            enter: vec!["a".into()],
            leave: vec!["b".into()],
            destroyed: true,
            seats: true,
            held_back: vec!["c".into()],
            unknown: false,
            list_cut: true,
        };
        assert!(report.differs());
        assert_eq!(
            report.to_string(),
            "gone at Tencent: destroy; enter [\"a\"]; leave [\"b\"]; seats take Tencent's list; \
             held back by the grace period [\"c\"]; Tencent's member list was cut: no leaves taken from it"
        );
        // Held back alone changes nothing.
        let held = RoomReport {
            held_back: vec!["c".into()],
            ..RoomReport::default()
        };
        assert!(!held.differs());
    }
}
