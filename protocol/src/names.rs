//! Naming rules shared by instruments, images and interface roles.
//!
//! Instrument names become LXC container names, cgroup names, NATS subject
//! tokens and directory names, so they are deliberately narrow: lowercase
//! ASCII letters, digits and `-`, starting with a letter, at most 48 bytes.
//! Interface roles become Linux interface names (at most 15 bytes).

/// Longest instrument or image name.
pub const MAX_NAME_LEN: usize = 48;
/// Longest interface role (Linux `IFNAMSIZ` - 1).
pub const MAX_ROLE_LEN: usize = 15;

/// Why a name was refused, or `None` when it is fine.
pub fn name_problem(name: &str) -> Option<String> {
    word_problem(name, MAX_NAME_LEN, true)
}

/// Why an interface role was refused, or `None` when it is fine.
pub fn role_problem(role: &str) -> Option<String> {
    word_problem(role, MAX_ROLE_LEN, false)
}

fn word_problem(s: &str, max: usize, dash: bool) -> Option<String> {
    if s.is_empty() {
        return Some("is empty".into());
    }
    if s.len() > max {
        return Some(format!(
            "{:?} is {} bytes long, more than {max}",
            s,
            s.len()
        ));
    }
    if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Some(format!("{s:?} does not start with a lowercase letter"));
    }
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || (dash && c == '-');
    if let Some(bad) = s.chars().find(|c| !ok(*c)) {
        return Some(format!("{s:?} contains {bad:?}"));
    }
    if dash && s.ends_with('-') {
        return Some(format!("{s:?} ends with '-'"));
    }
    None
}

/// The fix text for a bad name.
pub const NAME_FIX: &str =
    "use lowercase letters, digits and '-', starting with a letter, at most 48 characters";
/// The fix text for a bad role.
pub const ROLE_FIX: &str =
    "use lowercase letters and digits, starting with a letter, at most 15 characters (e.g. seg0)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(name_problem("beacon"), None);
        assert_eq!(name_problem("ids-2"), None);
        assert!(name_problem("").is_some());
        assert!(name_problem("Beacon").is_some());
        assert!(name_problem("2beacon").is_some());
        assert!(name_problem("bea_con").is_some());
        assert!(name_problem("beacon-").is_some());
        assert!(name_problem("a/b").is_some());
        assert!(name_problem("..").is_some());
        assert!(name_problem(&"a".repeat(49)).is_some());
        assert_eq!(name_problem(&"a".repeat(48)), None);
    }

    #[test]
    fn roles() {
        assert_eq!(role_problem("seg0"), None);
        assert!(role_problem("seg-0").is_some());
        assert!(role_problem("averyveryverylong0").is_some());
    }
}
