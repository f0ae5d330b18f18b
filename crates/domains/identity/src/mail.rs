//! The mails identity sends: which template, with which values. The wording lives in the
//! templates (`identity/password_reset`, `identity/email_verification`), which a team
//! overrides without touching Rust.

use std::time::Duration;

use keel_kernel::mail::{Email, MailTemplates, TemplateError};
use serde_json::json;

fn link(public_url: &str, path: &str, token: &str) -> String {
    format!("{}/{path}?token={token}", public_url.trim_end_matches('/'))
}

/// The password-reset mail with its single-use link.
pub fn password_reset(
    templates: &dyn MailTemplates,
    to: &str,
    public_url: &str,
    token: &str,
    ttl: Duration,
) -> Result<Email, TemplateError> {
    let context = json!({
        "link": link(public_url, "reset-password", token),
        "expires_in_minutes": (ttl.as_secs() / 60).max(1),
    });
    Ok(Email::rendered(
        to,
        templates.render("identity/password_reset", &context)?,
    ))
}

/// The email-verification mail with its single-use link.
pub fn email_verification(
    templates: &dyn MailTemplates,
    to: &str,
    public_url: &str,
    token: &str,
    ttl: Duration,
) -> Result<Email, TemplateError> {
    let context = json!({
        "link": link(public_url, "verify-email", token),
        "expires_in_hours": (ttl.as_secs() / 3600).max(1),
    });
    Ok(Email::rendered(
        to,
        templates.render("identity/email_verification", &context)?,
    ))
}

#[cfg(test)]
mod tests {
    use keel_kernel::mail::ListingTemplates;

    use super::*;

    #[test]
    fn links_use_the_public_url_and_the_token() {
        let mail = password_reset(
            &ListingTemplates,
            "a@example.com",
            "https://app.example.com/",
            "tok",
            Duration::from_secs(1800),
        )
        .unwrap();
        assert_eq!(mail.subject, "identity/password_reset");
        assert!(
            mail.text
                .contains("link: https://app.example.com/reset-password?token=tok"),
            "{}",
            mail.text
        );
        assert!(mail.text.contains("expires_in_minutes: 30"));
        let mail = email_verification(
            &ListingTemplates,
            "a@example.com",
            "https://app.example.com",
            "tok",
            Duration::from_secs(2 * 86400),
        )
        .unwrap();
        assert!(mail.text.contains("verify-email?token=tok"));
        assert!(mail.text.contains("expires_in_hours: 48"));
    }
}
