//! The bodies of Keel's fuzz targets, one function per parser that reads hostile input.
//!
//! `cargo fuzz` drives them from `fuzz_targets/` (nightly, coverage-guided); the end-to-end
//! suite includes this same file and replays every committed corpus entry through them on the
//! stable toolchain, so a crash once found stays fixed. Each function panics only when the
//! parser breaks a property it promises; an `Err` for bad input is the expected answer.

use std::sync::OnceLock;

use keel_config::{Settings, Sources};
use keel_identity::security::AccessTokens as _;
use keel_infrastructure::identity::JwtTokens;
use keel_kernel::query::{Cursor, FieldKind, FieldSpec, ListQuery, ListSpec, MAX_LIMIT, Position};
use secrecy::ExposeSecret as _;

/// A list spec with one field of every kind, nullable and not, so every parser path is live.
static SPEC: ListSpec = ListSpec {
    fields: &[
        FieldSpec::new("name", FieldKind::Text)
            .sortable()
            .filterable(),
        FieldSpec::new("status", FieldKind::Enum(&["draft", "live", "archived"]))
            .sortable()
            .filterable(),
        FieldSpec::new("created_at", FieldKind::Timestamp)
            .sortable()
            .filterable(),
        FieldSpec::new("deleted_at", FieldKind::Timestamp)
            .sortable()
            .filterable()
            .nullable(),
        FieldSpec::new("quantity", FieldKind::Integer)
            .sortable()
            .filterable()
            .nullable(),
        FieldSpec::new("done", FieldKind::Boolean)
            .sortable()
            .filterable(),
        FieldSpec::new("owner_id", FieldKind::Uuid).filterable(),
    ],
    default_sort: "-created_at",
    searchable: true,
};

/// Orderings a cursor may have been issued for (the first input byte picks one).
const SORTS: &[&str] = &[
    "-created_at",
    "name",
    "-deleted_at,quantity",
    "done,-name,status",
    "quantity,-deleted_at,created_at",
];

/// The list query language from a raw query string, as the api's extractor reads it.
pub fn list_query(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    let Ok(params) = serde_urlencoded::from_str::<Vec<(String, String)>>(&raw) else {
        return;
    };
    if let Ok(query) = ListQuery::parse(&SPEC, params.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    {
        assert!((1..=MAX_LIMIT).contains(&query.limit), "limit out of range");
        let last = query.sort.last().expect("a parsed sort is never empty");
        assert_eq!(last.field, "id", "every ordering ends with the id key");
        roundtrip_cursor(&query);
    }
}

/// The keyset cursor decoder: any text as `cursor=` under one of a few orderings.
pub fn cursor(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let sort = SORTS[usize::from(pick) % SORTS.len()];
    let raw = String::from_utf8_lossy(rest);
    if let Ok(query) = ListQuery::parse(&SPEC, [("sort", sort), ("cursor", raw.as_ref())]) {
        roundtrip_cursor(&query);
    }
}

/// A cursor that decodes must encode back to one that decodes to the same position.
fn roundtrip_cursor(query: &ListQuery) {
    let Position::After(cursor) = &query.position else {
        return;
    };
    let sort = query
        .sort
        .iter()
        .filter(|key| key.field != "id")
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let encoded = Cursor::encode(&query.sort, &cursor.values);
    let again = ListQuery::parse(&SPEC, [("sort", sort.as_str()), ("cursor", &encoded)])
        .expect("a re-encoded cursor decodes");
    assert_eq!(again.position, query.position, "cursor round trip");
}

/// The configuration loader: a TOML file, then `NAME=value` variable lines after a NUL byte.
pub fn config(data: &[u8]) {
    let (toml, vars) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let dir = config_dir();
    if std::fs::write(dir.join("default.toml"), toml).is_err() {
        return;
    }
    let vars = String::from_utf8_lossy(vars)
        .lines()
        .filter_map(|line| line.split_once('='))
        // Secret files name paths; the loader's own size cap is tested elsewhere, and a fuzzer
        // must not read the machine's files.
        .filter(|(name, _)| !name.ends_with("_FILE") && name != &"APP_CONFIG_DIR")
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    let sources = Sources {
        vars,
        config_dir: dir.to_path_buf(),
    };
    if let Ok(settings) = Settings::load_from(&sources) {
        let redacted = settings.to_redacted_toml();
        let auth = &settings.auth;
        let mut secrets: Vec<&str> = vec![auth.jwt_secret.expose_secret()];
        secrets.extend(auth.peppers.values().map(|p| p.expose_secret()));
        for secret in secrets {
            // Short values (a one-letter secret) can appear anywhere by chance.
            if secret.len() >= 8 {
                assert!(
                    !redacted.contains(secret),
                    "a secret appears in the redacted dump"
                );
            }
        }
    }
}

fn config_dir() -> &'static std::path::Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("keel-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        dir
    })
}

/// Access tokens and API keys as presented in `Authorization` / `X-API-Key`.
pub fn credentials(data: &[u8]) {
    let presented = String::from_utf8_lossy(data);
    // Without the signing key nothing the fuzzer writes can verify.
    assert!(
        access_tokens().verify(&presented).is_none(),
        "a forged access token verified"
    );
    let split = keel_identity::model::split_api_key(&presented);
    assert_eq!(
        split.is_some(),
        well_formed_key(&presented),
        "the parser and the written-out format disagree"
    );
    if let Some((prefix, secret)) = split {
        assert_eq!(
            format!("{}{prefix}_{secret}", keel_identity::model::API_KEY_PREFIX),
            presented,
            "an API key splits into exactly its parts"
        );
    }
}

/// `keel_<1..=16 chars without _>_<1..=128 chars>`, written out independently of the parser.
fn well_formed_key(presented: &str) -> bool {
    let Some(rest) = presented.strip_prefix(keel_identity::model::API_KEY_PREFIX) else {
        return false;
    };
    let Some(at) = rest.find('_') else {
        return false;
    };
    (1..=16).contains(&at) && (1..=128).contains(&(rest.len() - at - 1))
}

fn access_tokens() -> &'static JwtTokens {
    static TOKENS: OnceLock<JwtTokens> = OnceLock::new();
    TOKENS.get_or_init(|| {
        let settings = Settings::load_from(&Sources::from_vars(Vec::<(String, String)>::new()))
            .expect("the built-in local configuration loads");
        JwtTokens::new(&settings.auth).expect("the local signing key works")
    })
}

/// `If-Match` header lines (one per input line), as the conditional-update handlers read them.
pub fn if_match(data: &[u8]) {
    let lines: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    let Some(versions) = keel_api::crud::if_match_values(lines.iter().copied()) else {
        return;
    };
    let tags: usize = lines.iter().map(|l| l.split(|b| *b == b',').count()).sum();
    assert!(versions.len() <= tags, "more versions than tags");
    // Only exact strong tags count: every version is some `"v<n>"` tag, never a weak one.
    let strong: Vec<i64> = lines
        .iter()
        .filter_map(|line| std::str::from_utf8(line).ok())
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .filter_map(|tag| tag.strip_prefix("\"v")?.strip_suffix('"')?.parse().ok())
        .collect();
    for version in &versions {
        assert!(
            strong.contains(version),
            "version {version} matched no strong tag"
        );
    }
    for version in versions {
        let tag = keel_api::crud::etag(version);
        assert_eq!(
            keel_api::crud::if_match_values([tag.as_bytes()]),
            Some(vec![version]),
            "the tag Keel sends for a version matches that version"
        );
    }
}
