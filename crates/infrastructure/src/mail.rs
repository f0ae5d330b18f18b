//! Mail delivery behind the kernel's `Mailer` port: `.eml` files (the local default), log
//! lines, or an SMTP relay (STARTTLS, TLS or plain; optional login). The worker calls it from
//! the `mail.send` job, never a request handler.

use std::path::PathBuf;

use async_trait::async_trait;
use chrono::Utc;
use keel_config::{MailSettings, MailTransport, SmtpTls};
use keel_kernel::RepoError;
use keel_kernel::error::BoxError;
use keel_kernel::jobs::JobId;
use keel_kernel::mail::{Email, Mailer};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sea_orm::{DatabaseBackend, DatabaseConnection};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use crate::error::repo_err;

/// The mail transport could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct MailConfigError {
    /// The configuration key at fault.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

/// Delivers mail with the configured transport.
#[derive(Debug, Clone)]
pub struct LettreMailer {
    from: Mailbox,
    transport: Transport,
}

#[derive(Debug, Clone)]
enum Transport {
    File(AsyncFileTransport<Tokio1Executor>, PathBuf),
    Log,
    Smtp(AsyncSmtpTransport<Tokio1Executor>, String),
}

impl LettreMailer {
    /// A mailer for `[mail]`; the file transport's directory is created.
    pub fn new(settings: &MailSettings) -> Result<Self, MailConfigError> {
        let from = settings
            .from
            .parse::<Mailbox>()
            .map_err(|e| MailConfigError {
                key: "mail.from",
                message: format!("not a mailbox such as `Keel <no-reply@example.com>`: {e}"),
            })?;
        let transport = match settings.transport {
            MailTransport::File => {
                let dir = PathBuf::from(&settings.dir);
                std::fs::create_dir_all(&dir).map_err(|e| MailConfigError {
                    key: "mail.dir",
                    message: format!("cannot create {}: {e}", dir.display()),
                })?;
                Transport::File(AsyncFileTransport::new(&dir), dir)
            }
            MailTransport::Log => Transport::Log,
            MailTransport::Smtp => smtp(settings)?,
        };
        Ok(Self { from, transport })
    }

    /// `email` as the `.eml` bytes this mailer would send (`api mail preview`).
    pub fn eml(&self, email: &Email) -> Result<Vec<u8>, BoxError> {
        Ok(self.message(email, None)?.formatted())
    }

    fn message(&self, email: &Email, dedupe_key: Option<&str>) -> Result<Message, BoxError> {
        let mut builder = Message::builder();
        if let Some(key) = dedupe_key {
            builder = builder.message_id(Some(message_id(key, &self.from)));
        }
        Ok(builder
            .from(self.from.clone())
            .to(email.to.parse::<Mailbox>()?)
            .subject(email.subject.clone())
            .multipart(MultiPart::alternative_plain_html(
                email.text.clone(),
                email.html.clone(),
            ))?)
    }
}

#[async_trait]
impl Mailer for LettreMailer {
    async fn send(&self, email: Email, dedupe_key: Option<&str>) -> Result<(), BoxError> {
        // One span per delivery, a child of the job that sends it (the recipient stays out:
        // spans leave the process).
        let span = tracing::info_span!(
            "mail.send",
            otel.kind = "client",
            transport = match &self.transport {
                Transport::File(..) => "file",
                Transport::Smtp(..) => "smtp",
                Transport::Log => "log",
            },
        );
        tracing::Instrument::instrument(self.deliver(email, dedupe_key), span).await
    }
}

impl LettreMailer {
    async fn deliver(&self, email: Email, dedupe_key: Option<&str>) -> Result<(), BoxError> {
        let message = self.message(&email, dedupe_key)?;
        let result = match &self.transport {
            Transport::File(transport, dir) => transport
                .send(message)
                .await
                .map(|id| tracing::info!(subject = %email.subject, file = %dir.join(format!("{id}.eml")).display(), "mail written"))
                .map_err(|e| Box::new(e) as BoxError),
            Transport::Smtp(transport, relay) => transport
                .send(message)
                .await
                .map(|response| tracing::info!(subject = %email.subject, %relay, code = %response.code(), "mail relayed"))
                .map_err(|e| Box::new(e) as BoxError),
            Transport::Log => {
                // Bodies carry single-use links: never logged.
                tracing::info!(subject = %email.subject, to = %email.to, "mail (log transport)");
                Ok(())
            }
        };
        if let Err(error) = &result {
            tracing::error!(%error, subject = %email.subject, "mail delivery failed");
        }
        result
    }
}

fn smtp(settings: &MailSettings) -> Result<Transport, MailConfigError> {
    let smtp = &settings.smtp;
    let invalid = |e: lettre::transport::smtp::Error| MailConfigError {
        key: "mail.smtp.host",
        message: format!("cannot use `{}`: {e}", smtp.host),
    };
    let builder = match smtp.tls {
        SmtpTls::Starttls => {
            AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host).map_err(invalid)?
        }
        SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host).map_err(invalid)?,
        SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host),
    };
    let mut builder = builder.port(smtp.port).timeout(Some(smtp.timeout));
    if let (Some(username), Some(password)) = (&smtp.username, &smtp.password) {
        builder = builder.credentials(Credentials::new(
            username.clone(),
            password.expose_secret().to_owned(),
        ));
    }
    Ok(Transport::Smtp(
        builder.build(),
        format!("{}:{}", smtp.host, smtp.port),
    ))
}

/// A `Message-ID` derived from the dedupe key (hashed: keys may hold characters a message id
/// cannot), at the sender's domain.
fn message_id(dedupe_key: &str, from: &Mailbox) -> String {
    let digest = Sha256::digest(dedupe_key.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("<{hex}@{}>", from.email.domain())
}

/// The record of mail already handed to the transport, by dedupe key: a retried `mail.send`
/// job finds its key here and does not send again.
#[derive(Debug, Clone)]
pub struct MailDeliveries {
    db: DatabaseConnection,
}

impl MailDeliveries {
    /// The ledger on `db`.
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

#[async_trait]
impl keel_kernel::mail::DeliveryLedger for MailDeliveries {
    async fn was_sent(&self, dedupe_key: &str) -> Result<bool, RepoError> {
        use sea_orm::ConnectionTrait;
        let backend = self.db.get_database_backend();
        let sql = match backend {
            DatabaseBackend::Postgres => {
                "SELECT 1 AS one FROM mail_deliveries WHERE dedupe_key = $1"
            }
            _ => "SELECT 1 AS one FROM mail_deliveries WHERE dedupe_key = ?",
        };
        let row = self
            .db
            .query_one_raw(sea_orm::Statement::from_sql_and_values(
                backend,
                sql,
                [dedupe_key.into()],
            ))
            .await
            .map_err(repo_err)?;
        Ok(row.is_some())
    }

    async fn record(&self, dedupe_key: &str, job: JobId) -> Result<(), RepoError> {
        use sea_orm::ConnectionTrait;
        let backend = self.db.get_database_backend();
        let sql = match backend {
            DatabaseBackend::Postgres => {
                "INSERT INTO mail_deliveries (dedupe_key, job_id, sent_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (dedupe_key) DO NOTHING"
            }
            _ => {
                "INSERT INTO mail_deliveries (dedupe_key, job_id, sent_at) VALUES (?, ?, ?) \
                 ON CONFLICT (dedupe_key) DO NOTHING"
            }
        };
        self.db
            .execute_raw(sea_orm::Statement::from_sql_and_values(
                backend,
                sql,
                [dedupe_key.into(), job.as_uuid().into(), Utc::now().into()],
            ))
            .await
            .map_err(repo_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use keel_config::{Settings, Sources};

    use super::*;

    #[tokio::test]
    async fn the_file_transport_writes_one_eml_per_message() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::load_from(&Sources::from_vars::<&str, &str>([]))
            .unwrap()
            .mail;
        settings.dir = dir.path().join("mail").display().to_string();
        let mailer = LettreMailer::new(&settings).unwrap();
        mailer
            .send(
                Email {
                    to: "ada@example.com".into(),
                    subject: "Reset your password".into(),
                    text: "Set a new password: https://x/reset-password?token=abc".into(),
                    html: "<p>hi</p>".into(),
                },
                Some("identity.password_reset:42"),
            )
            .await
            .unwrap();
        let files: Vec<_> = std::fs::read_dir(dir.path().join("mail"))
            .unwrap()
            .collect();
        assert_eq!(files.len(), 1);
        let path = files[0].as_ref().unwrap().path();
        assert_eq!(path.extension().unwrap(), "eml");
        let content = std::fs::read_to_string(path).unwrap();
        assert!(content.contains("Subject: Reset your password"));
        assert!(content.contains("To: ada@example.com"));
        assert!(content.contains(&message_id(
            "identity.password_reset:42",
            &"Keel <no-reply@keel.invalid>".parse().unwrap()
        )));
        assert!(
            content.contains("reset-password?token=3Dabc")
                || content.contains("reset-password?token=abc")
        );
        assert!(
            mailer
                .send(
                    Email {
                        to: "not an address".into(),
                        subject: "x".into(),
                        text: String::new(),
                        html: String::new(),
                    },
                    None
                )
                .await
                .is_err()
        );
    }
}
