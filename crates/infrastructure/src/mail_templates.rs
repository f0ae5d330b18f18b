//! Mail templates on minijinja: the built-in ones (compiled into the binary from
//! `crates/infrastructure/mail-templates/`), each overridable by a file of the same name under
//! `mail.templates_dir`. A mail `name` is three files: `name.subject.txt`, `name.txt` and
//! `name.html` (values escaped; `layout.html` is the shared frame).
//!
//! Every template is compiled, and every mail rendered with its sample values, when the
//! process starts: a broken override stops startup naming the file and line, instead of
//! failing the first time someone asks for a password reset.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use keel_kernel::mail::{MailTemplates, Rendered, TemplateError};
use minijinja::{Environment, UndefinedBehavior};

/// The built-in files, by name.
const BUILT_IN: &[(&str, &str)] = &[
    ("layout.html", include_str!("../mail-templates/layout.html")),
    (
        "identity/password_reset.subject.txt",
        include_str!("../mail-templates/identity/password_reset.subject.txt"),
    ),
    (
        "identity/password_reset.txt",
        include_str!("../mail-templates/identity/password_reset.txt"),
    ),
    (
        "identity/password_reset.html",
        include_str!("../mail-templates/identity/password_reset.html"),
    ),
    (
        "identity/email_verification.subject.txt",
        include_str!("../mail-templates/identity/email_verification.subject.txt"),
    ),
    (
        "identity/email_verification.txt",
        include_str!("../mail-templates/identity/email_verification.txt"),
    ),
    (
        "identity/email_verification.html",
        include_str!("../mail-templates/identity/email_verification.html"),
    ),
    (
        "identity/security_notice.subject.txt",
        include_str!("../mail-templates/identity/security_notice.subject.txt"),
    ),
    (
        "identity/security_notice.txt",
        include_str!("../mail-templates/identity/security_notice.txt"),
    ),
    (
        "identity/security_notice.html",
        include_str!("../mail-templates/identity/security_notice.html"),
    ),
];

/// Every mail with the values it is checked (and previewed) with.
const SAMPLES: &[(&str, &str)] = &[
    (
        "identity/password_reset",
        include_str!("../mail-templates/identity/password_reset.sample.json"),
    ),
    (
        "identity/email_verification",
        include_str!("../mail-templates/identity/email_verification.sample.json"),
    ),
    (
        "identity/security_notice",
        include_str!("../mail-templates/identity/security_notice.sample.json"),
    ),
];

/// Largest template file read from `mail.templates_dir`.
const MAX_FILE_BYTES: u64 = 256 * 1024;

/// The mail templates of a process.
#[derive(Debug)]
pub struct FileTemplates {
    env: Environment<'static>,
    overridden: Vec<String>,
}

fn error(template: &str, message: impl std::fmt::Display) -> TemplateError {
    TemplateError {
        template: template.to_owned(),
        message: message.to_string(),
    }
}

/// A minijinja error with its file and line, and the chain of causes.
fn describe(error: &minijinja::Error) -> String {
    let mut text = error.to_string();
    if let (Some(name), Some(line)) = (error.name(), error.line()) {
        text = format!("{text} ({name}, line {line})");
    }
    crate::error::with_causes(text, error)
}

impl FileTemplates {
    /// The built-in templates, with the files under `dir` (when it exists) in place of the
    /// ones of the same name; every mail is rendered once with its sample values.
    pub fn load(dir: &Path) -> Result<Self, TemplateError> {
        let mut files: BTreeMap<String, String> = BUILT_IN
            .iter()
            .map(|(name, source)| ((*name).to_owned(), (*source).to_owned()))
            .collect();
        let mut overridden = Vec::new();
        if dir.is_dir() {
            for (name, path) in template_files(dir)? {
                let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                if size > MAX_FILE_BYTES {
                    return Err(error(
                        &name,
                        format!("{} is larger than 256 KiB", path.display()),
                    ));
                }
                let source = std::fs::read_to_string(&path)
                    .map_err(|e| error(&name, format!("reading {}: {e}", path.display())))?;
                overridden.push(name.clone());
                files.insert(name, source);
            }
        }
        let mut env = Environment::new();
        // A value the template names but the mail does not give is an error, never an empty
        // link in a sent mail.
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        for (name, source) in files {
            env.add_template_owned(name.clone(), source)
                .map_err(|e| error(&name, describe(&e)))?;
        }
        let templates = Self { env, overridden };
        for (mail, sample) in SAMPLES {
            let context: serde_json::Value = serde_json::from_str(sample)
                .map_err(|e| error(mail, format!("sample values: {e}")))?;
            templates.render(mail, &context)?;
        }
        Ok(templates)
    }

    /// The names read from `mail.templates_dir`.
    pub fn overridden(&self) -> &[String] {
        &self.overridden
    }

    /// The mails there are, with their sample values (for `api mail preview`).
    pub fn samples() -> impl Iterator<Item = (&'static str, serde_json::Value)> {
        SAMPLES
            .iter()
            .filter_map(|(mail, sample)| Some((*mail, serde_json::from_str(sample).ok()?)))
    }

    fn render_file(
        &self,
        file: &str,
        context: &serde_json::Value,
    ) -> Result<String, TemplateError> {
        let template = self
            .env
            .get_template(file)
            .map_err(|e| error(file, describe(&e)))?;
        template
            .render(context)
            .map_err(|e| error(file, describe(&e)))
    }
}

/// Every `.txt` and `.html` file under `dir`, by its name relative to `dir` (`/`-separated).
fn template_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, TemplateError> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries = std::fs::read_dir(&current)
            .map_err(|e| error("*", format!("reading {}: {e}", current.display())))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| error("*", format!("reading {}: {e}", current.display())))?;
            let path = entry.path();
            // Symbolic links to directories are not followed: a loop must not hang startup.
            let kind = entry
                .file_type()
                .map_err(|e| error("*", format!("reading {}: {e}", path.display())))?;
            if kind.is_dir() {
                pending.push(path);
                continue;
            }
            let wanted = path
                .extension()
                .is_some_and(|ext| ext == "txt" || ext == "html");
            let relative = path.strip_prefix(dir).ok().and_then(Path::to_str);
            if let (true, Some(relative)) = (wanted, relative) {
                found.push((relative.replace('\\', "/"), path.clone()));
            }
        }
    }
    Ok(found)
}

impl MailTemplates for FileTemplates {
    fn render(
        &self,
        template: &str,
        context: &serde_json::Value,
    ) -> Result<Rendered, TemplateError> {
        let subject = self.render_file(&format!("{template}.subject.txt"), context)?;
        // One line: a value with a line break cannot add a header.
        let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
        if subject.is_empty() {
            return Err(error(template, "the subject is empty"));
        }
        Ok(Rendered {
            subject,
            text: self.render_file(&format!("{template}.txt"), context)?,
            html: self.render_file(&format!("{template}.html"), context)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_built_in_mail_renders_with_its_sample_and_escapes_html() {
        let templates = FileTemplates::load(Path::new("/nonexistent")).unwrap();
        assert!(templates.overridden().is_empty());
        for (mail, sample) in FileTemplates::samples() {
            let rendered = templates.render(mail, &sample).unwrap();
            assert!(!rendered.subject.is_empty(), "{mail}");
            assert!(!rendered.text.trim().is_empty(), "{mail}");
            if sample.get("link").is_some() {
                assert!(
                    rendered.text.contains("sample-token"),
                    "{mail}: {}",
                    rendered.text
                );
                assert!(rendered.html.contains("<a href="), "{mail}");
            }
        }
        // Each change has its own wording, in every part.
        let mut subjects = std::collections::BTreeSet::new();
        for change in [
            "mfa_enabled",
            "mfa_disabled",
            "mfa_reset",
            "mfa_recovery_codes_replaced",
        ] {
            let context = json!({ "change": change, "at": "2026-12-01 09:30 UTC" });
            let notice = templates
                .render("identity/security_notice", &context)
                .unwrap();
            assert!(notice.text.contains("2026-12-01 09:30 UTC"), "{change}");
            assert!(notice.html.contains("2026-12-01 09:30 UTC"), "{change}");
            subjects.insert(notice.subject);
        }
        assert_eq!(subjects.len(), 4, "{subjects:?}");
        let hostile = json!({ "link": "https://x/?a=<script>&b=\"", "expires_in_minutes": 5 });
        let rendered = templates
            .render("identity/password_reset", &hostile)
            .unwrap();
        assert!(!rendered.html.contains("<script>"), "{}", rendered.html);
        assert!(rendered.html.contains("&lt;script&gt;"));
        assert!(rendered.text.contains("<script>"), "text is not HTML");
    }

    #[test]
    fn a_missing_value_or_mail_is_an_error_naming_it() {
        let templates = FileTemplates::load(Path::new("/nonexistent")).unwrap();
        let missing = templates
            .render("identity/password_reset", &json!({ "link": "x" }))
            .unwrap_err();
        assert!(missing.message.contains("undefined"), "{missing}");
        let unknown = templates.render("billing/invoice", &json!({})).unwrap_err();
        assert_eq!(unknown.template, "billing/invoice.subject.txt");
    }

    #[test]
    fn a_file_in_the_templates_dir_overrides_and_a_broken_one_stops_loading() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("identity")).unwrap();
        std::fs::write(
            dir.path().join("identity/password_reset.subject.txt"),
            "Your {{ 'ACME' }} password\n\nBcc: evil@example.com",
        )
        .unwrap();
        let templates = FileTemplates::load(dir.path()).unwrap();
        assert_eq!(
            templates.overridden(),
            ["identity/password_reset.subject.txt"]
        );
        let sample = FileTemplates::samples().next().unwrap().1;
        let rendered = templates
            .render("identity/password_reset", &sample)
            .unwrap();
        assert_eq!(
            rendered.subject, "Your ACME password Bcc: evil@example.com",
            "one line, so no header can be added"
        );
        assert!(
            rendered.text.contains("Set a new password"),
            "the rest stays built in"
        );

        std::fs::write(
            dir.path().join("identity/password_reset.html"),
            "{% extends \"layout.html\" %}{% block content %}{{ link }{% endblock %}",
        )
        .unwrap();
        let broken = FileTemplates::load(dir.path()).unwrap_err();
        assert_eq!(broken.template, "identity/password_reset.html");
        assert!(broken.message.contains("line"), "{broken}");

        std::fs::write(
            dir.path().join("identity/password_reset.html"),
            "<p>{{ no_such_value }}</p>",
        )
        .unwrap();
        let undefined = FileTemplates::load(dir.path()).unwrap_err();
        assert!(undefined.message.contains("undefined"), "{undefined}");
    }
}
