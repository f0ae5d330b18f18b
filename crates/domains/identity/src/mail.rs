//! The mails identity sends: text and HTML bodies.

use std::time::Duration;

use keel_kernel::mail::Email;

fn minutes(ttl: Duration) -> u64 {
    (ttl.as_secs() / 60).max(1)
}

fn link(public_url: &str, path: &str, token: &str) -> String {
    format!("{}/{path}?token={token}", public_url.trim_end_matches('/'))
}

fn html(paragraph: &str, link: &str, action: &str, footer: &str) -> String {
    format!(
        "<!doctype html><html><body style=\"font-family:sans-serif\">\
         <p>{paragraph}</p><p><a href=\"{link}\">{action}</a></p>\
         <p style=\"color:#666\">{footer}</p></body></html>"
    )
}

/// The password-reset mail with its single-use link.
pub fn password_reset(to: &str, public_url: &str, token: &str, ttl: Duration) -> Email {
    let link = link(public_url, "reset-password", token);
    let minutes = minutes(ttl);
    let footer = format!(
        "The link works once and expires in {minutes} minutes. If you did not ask for it, ignore this mail: your password stays as it is."
    );
    Email {
        to: to.to_owned(),
        subject: "Reset your password".to_owned(),
        text: format!(
            "Someone asked to reset the password of your account.\n\nSet a new password: {link}\n\n{footer}\n"
        ),
        html: html(
            "Someone asked to reset the password of your account.",
            &link,
            "Set a new password",
            &footer,
        ),
    }
}

/// The email-verification mail with its single-use link.
pub fn email_verification(to: &str, public_url: &str, token: &str, ttl: Duration) -> Email {
    let link = link(public_url, "verify-email", token);
    let hours = (ttl.as_secs() / 3600).max(1);
    let footer = format!("The link works once and expires in {hours} hours.");
    Email {
        to: to.to_owned(),
        subject: "Confirm your email address".to_owned(),
        text: format!("Confirm your email address: {link}\n\n{footer}\n"),
        html: html(
            "Confirm the email address of your account.",
            &link,
            "Confirm my address",
            &footer,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_use_the_public_url_and_the_token() {
        let mail = password_reset(
            "a@example.com",
            "https://app.example.com/",
            "tok",
            Duration::from_secs(1800),
        );
        assert!(
            mail.text
                .contains("https://app.example.com/reset-password?token=tok")
        );
        assert!(
            mail.html
                .contains("href=\"https://app.example.com/reset-password?token=tok\"")
        );
        assert!(mail.text.contains("30 minutes"));
    }
}
