//! The mails identity sends: which template, with which values. The wording lives in the
//! templates (`identity/password_reset`, `identity/email_verification`,
//! `identity/security_notice`), which a team overrides without touching Rust.

use std::time::Duration;

use keel_kernel::mail::{Email, MailTemplates, TemplateError};
use serde_json::json;

fn link(public_url: &str, path: &str, token: &str) -> String {
    format!("{}/{path}?token={token}", public_url.trim_end_matches('/'))
}

/// Where a mail with a single-use link goes and what it says.
#[derive(Debug, Clone, Copy)]
pub struct LinkMail<'a> {
    /// The templates.
    pub templates: &'a dyn MailTemplates,
    /// The recipient.
    pub to: &'a str,
    /// Base URL of the link (`app.public_url`).
    pub public_url: &'a str,
    /// The link's token.
    pub token: &'a str,
    /// How long the link works.
    pub ttl: Duration,
}

impl LinkMail<'_> {
    fn render(
        &self,
        template: &str,
        path: &str,
        expiry: (&str, u64),
    ) -> Result<Email, TemplateError> {
        let mut context = json!({ "link": link(self.public_url, path, self.token) });
        context[expiry.0] = json!(expiry.1);
        Ok(Email::rendered(
            self.to,
            self.templates.render(template, &context)?,
        ))
    }

    /// The password-reset mail.
    pub fn password_reset(&self) -> Result<Email, TemplateError> {
        let minutes = (self.ttl.as_secs() / 60).max(1);
        self.render(
            "identity/password_reset",
            "reset-password",
            ("expires_in_minutes", minutes),
        )
    }

    /// The email-verification mail.
    pub fn email_verification(&self) -> Result<Email, TemplateError> {
        let hours = (self.ttl.as_secs() / 3600).max(1);
        self.render(
            "identity/email_verification",
            "verify-email",
            ("expires_in_hours", hours),
        )
    }
}

/// The notice an account gets when its sign-in security changed (`change` names how), so
/// that a change made by someone else does not go unnoticed.
pub fn security_notice(
    templates: &dyn MailTemplates,
    to: &str,
    change: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<Email, TemplateError> {
    let context = json!({
        "change": change,
        "at": at.format("%Y-%m-%d %H:%M UTC").to_string(),
    });
    Ok(Email::rendered(
        to,
        templates.render("identity/security_notice", &context)?,
    ))
}

#[cfg(test)]
mod tests {
    use keel_kernel::mail::ListingTemplates;

    use super::*;

    #[test]
    fn links_use_the_public_url_and_the_token() {
        let mail = LinkMail {
            templates: &ListingTemplates,
            to: "a@example.com",
            public_url: "https://app.example.com/",
            token: "tok",
            ttl: Duration::from_secs(1800),
        }
        .password_reset()
        .unwrap();
        assert_eq!(mail.subject, "identity/password_reset");
        assert!(
            mail.text
                .contains("link: https://app.example.com/reset-password?token=tok"),
            "{}",
            mail.text
        );
        assert!(mail.text.contains("expires_in_minutes: 30"));
        let mail = LinkMail {
            templates: &ListingTemplates,
            to: "a@example.com",
            public_url: "https://app.example.com",
            token: "tok",
            ttl: Duration::from_secs(2 * 86400),
        }
        .email_verification()
        .unwrap();
        assert!(mail.text.contains("verify-email?token=tok"));
        assert!(mail.text.contains("expires_in_hours: 48"));
    }
}
