//! Who may do what over D-Bus, from the caller's credentials as the bus
//! daemon reports them (`GetConnectionCredentials`), never from a PID:
//! reads for root and the groups `outpost` and `outpost-admin`, changes
//! for root and `outpost-admin`.

use std::fmt;

/// The group whose members may read (status, history, events).
pub const READ_GROUP: &str = "outpost";
/// The group whose members may also change the sensor.
pub const ADMIN_GROUP: &str = "outpost-admin";

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Change,
}

/// A caller, as the bus daemon vouches for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Its unique bus name (":1.42").
    pub sender: String,
    pub uid: u32,
    pub gids: Vec<u32>,
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "uid {} via {}", self.uid, self.sender)
    }
}

/// The gids of the two groups on this host (`None`: the group does not
/// exist, so nobody is in it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Groups {
    pub read: Option<u32>,
    pub admin: Option<u32>,
}

impl Groups {
    /// Looks the groups up now (they may be made after outpostd starts).
    pub fn lookup() -> Groups {
        let gid = |name: &str| {
            nix::unistd::Group::from_name(name)
                .ok()
                .flatten()
                .map(|g| g.gid.as_raw())
        };
        Groups {
            read: gid(READ_GROUP),
            admin: gid(ADMIN_GROUP),
        }
    }
}

/// Why a call was refused: the rule, the caller, and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refused: {what} needs root or membership in group {needs} (caller {caller}) \
     (fix: run it as root, or add the user to group {needs})"
)]
pub struct Denied {
    pub what: &'static str,
    pub needs: String,
    pub caller: String,
}

/// Whether `caller` may make a call that needs `access`.
pub fn authorize(caller: &Caller, access: Access, groups: Groups) -> Result<(), Denied> {
    if caller.uid == 0 {
        return Ok(());
    }
    let member = |g: Option<u32>| g.is_some_and(|g| caller.gids.contains(&g));
    let (ok, what, needs) = match access {
        Access::Read => (
            member(groups.read) || member(groups.admin),
            "reading the sensor's state",
            format!("{READ_GROUP} or {ADMIN_GROUP}"),
        ),
        Access::Change => (
            member(groups.admin),
            "changing the sensor",
            ADMIN_GROUP.to_string(),
        ),
    };
    if ok {
        Ok(())
    } else {
        Err(Denied {
            what,
            needs,
            caller: caller.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(uid: u32, gids: &[u32]) -> Caller {
        Caller {
            sender: ":1.7".into(),
            uid,
            gids: gids.to_vec(),
        }
    }

    #[test]
    fn root_may_do_all_readers_may_read_admins_may_change() {
        let g = Groups {
            read: Some(900),
            admin: Some(901),
        };
        assert!(authorize(&caller(0, &[]), Access::Change, g).is_ok());
        assert!(authorize(&caller(1000, &[900]), Access::Read, g).is_ok());
        assert!(authorize(&caller(1000, &[901]), Access::Read, g).is_ok());
        assert!(authorize(&caller(1000, &[901]), Access::Change, g).is_ok());
        let e = authorize(&caller(1000, &[900]), Access::Change, g).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("changing the sensor needs root or membership in group outpost-admin")
                && text.contains("uid 1000 via :1.7"),
            "{text}"
        );
        let e = authorize(&caller(1000, &[5]), Access::Read, g).unwrap_err();
        assert!(e.to_string().contains("outpost or outpost-admin"), "{e}");
    }

    #[test]
    fn a_missing_group_admits_nobody_but_root() {
        let g = Groups::default();
        assert!(authorize(&caller(1000, &[0, 1, 2]), Access::Read, g).is_err());
        assert!(authorize(&caller(0, &[]), Access::Read, g).is_ok());
    }
}
