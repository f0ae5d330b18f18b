//! The password policy: length bounds, no common or trivially guessable passwords.

use std::collections::HashSet;
use std::sync::OnceLock;

use keel_kernel::validation::FieldErrors;

use crate::model::Email;

const COMMON: &str = include_str!("common-passwords.txt");

fn common() -> &'static HashSet<String> {
    static SET: OnceLock<HashSet<String>> = OnceLock::new();
    SET.get_or_init(|| {
        COMMON
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_lowercase)
            .collect()
    })
}

/// Length bounds, from `auth.password_min_length` and `auth.password_max_length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// Fewest characters.
    pub min_length: usize,
    /// Most characters (argon2 costs grow with input; 128 is generous for passphrases).
    pub max_length: usize,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_length: 12,
            max_length: 128,
        }
    }
}

impl PasswordPolicy {
    /// Records every rule `password` breaks under `field` (e.g. `password`, `new_password`).
    pub fn check(
        &self,
        password: &str,
        email: Option<&Email>,
        field: &str,
        errors: &mut FieldErrors,
    ) {
        let length = password.chars().count();
        if length < self.min_length || length > self.max_length {
            errors.add(
                field,
                "length",
                format!(
                    "must be between {} and {} characters long",
                    self.min_length, self.max_length
                ),
            );
            return;
        }
        let lowered = password.to_lowercase();
        if common().contains(&lowered) {
            errors.add(
                field,
                "common_password",
                "is too common; choose a less predictable password",
            );
        } else if is_trivial(&lowered) {
            errors.add(
                field,
                "weak_password",
                "is a repeated or sequential pattern; choose a less predictable password",
            );
        } else if let Some(email) = email
            && (lowered.contains(email.local_part()) && email.local_part().len() >= 4
                || lowered == email.as_str())
        {
            errors.add(
                field,
                "contains_email",
                "must not contain your email address",
            );
        }
    }
}

/// One repeated character, or one character repeated with a single step (`abcdef…`, `98765…`).
fn is_trivial(password: &str) -> bool {
    let chars: Vec<char> = password.chars().collect();
    if chars.windows(2).all(|w| w[0] == w[1]) {
        return true;
    }
    let steps: Vec<i64> = chars
        .windows(2)
        .map(|w| i64::from(u32::from(w[1])) - i64::from(u32::from(w[0])))
        .collect();
    steps.windows(2).all(|w| w[0] == w[1]) && steps.first().is_some_and(|s| s.abs() == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(password: &str) -> Vec<String> {
        let mut errors = FieldErrors::new();
        let email = Email::parse("grace.hopper@example.com").unwrap();
        PasswordPolicy::default().check(password, Some(&email), "password", &mut errors);
        errors.into_vec().into_iter().map(|e| e.code).collect()
    }

    #[test]
    fn good_passphrases_pass() {
        assert!(problems("plum-orbit-kettle-7").is_empty());
        assert!(problems("correct horse battery stapler").is_empty());
    }

    #[test]
    fn each_rule_names_itself() {
        assert_eq!(problems("short"), ["length"]);
        assert_eq!(problems(&"x".repeat(129)), ["length"]);
        assert_eq!(problems("Password1234"), ["common_password"]);
        assert_eq!(
            problems("correct horse battery staple"),
            ["common_password"]
        );
        assert_eq!(problems("aaaaaaaaaaaaaaaa"), ["weak_password"]);
        assert_eq!(problems("abcdefghijklmnopq"), ["weak_password"]);
        assert_eq!(problems("zyxwvutsrqponm"), ["weak_password"]);
        assert_eq!(problems("my grace.hopper secret"), ["contains_email"]);
    }

    #[test]
    fn the_embedded_list_is_loaded() {
        assert!(common().len() > 100);
        assert!(common().contains("password1234"));
    }
}
