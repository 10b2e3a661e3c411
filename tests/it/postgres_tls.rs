//! PostgreSQL over TLS: what each `sslmode` does against the test server (which serves TLS
//! with a certificate for 127.0.0.1 and localhost issued by the CA in
//! `MNEMO_TEST_POSTGRES_TLS_ROOT`), against a fake server that refuses TLS, and the refusals
//! of bad options. The server tests skip when the test server is not configured.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};

use mnemo::backend;
use mnemo::{Error, Instance};

use crate::support::{postgres_storage, Storage, TempDir};

/// A password that must never appear in an error.
const PASSWORD: &str = "Sup3r-Secret-Pw";

/// The test server with TLS, and a fresh database on it.
struct TlsServer {
    _storage: Storage,
    /// The fresh database's URL, without a query.
    url: String,
    /// Its name.
    database: String,
    admin: postgres::Client,
    /// The CA of the server's certificate.
    root: String,
    /// The server's certificate itself.
    cert: String,
    /// An unrelated CA.
    wrong_root: String,
}

fn tls_server() -> Option<TlsServer> {
    let var = |name: &str| std::env::var(name).ok();
    let (Some(root), Some(cert), Some(wrong_root)) = (
        var("MNEMO_TEST_POSTGRES_TLS_ROOT"),
        var("MNEMO_TEST_POSTGRES_TLS_CERT"),
        var("MNEMO_TEST_POSTGRES_TLS_WRONG_ROOT"),
    ) else {
        eprintln!(
            "postgres TLS: skipped (set MNEMO_TEST_POSTGRES_URL and MNEMO_TEST_POSTGRES_TLS_*: \
             scripts/test-all does)"
        );
        return None;
    };
    let storage = postgres_storage()?;
    let Storage::Postgres {
        url,
        admin_url,
        name,
    } = &storage
    else {
        unreachable!()
    };
    let (url, database) = (url.clone(), name.clone());
    let admin = postgres::Client::connect(admin_url, postgres::NoTls).unwrap();
    Some(TlsServer {
        _storage: storage,
        url,
        database,
        admin,
        root,
        cert,
        wrong_root,
    })
}

impl TlsServer {
    /// The database's URL with `query` (and a unique `application_name`, returned too).
    fn url_with(&self, query: &str) -> (String, String) {
        let app = format!(
            "mnemo_tls_{}",
            mnemo::crypto::random::hex_token::<6>().unwrap()
        );
        (format!("{}?application_name={app}&{query}", self.url), app)
    }

    /// Whether each server session of `app` is encrypted, as the server reports it.
    fn sessions_encrypted(&mut self, app: &str) -> Vec<bool> {
        self.admin
            .query(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.application_name = $1",
                &[&app],
            )
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect()
    }

    /// Opens `query`'s URL, works through it, and says whether the session was encrypted.
    fn encrypted_with(&mut self, query: &str) -> bool {
        let (url, app) = self.url_with(query);
        let backend = backend::open(&url).unwrap_or_else(|e| panic!("{query}: {e}"));
        let inst = Instance::open(backend.clone()).unwrap();
        inst.create_user(&app, None).unwrap();
        assert!(inst.login(&app, None).is_ok());
        let encrypted = self.sessions_encrypted(&app);
        assert_eq!(encrypted.len(), 1, "{query}: one session expected");
        drop(inst);
        drop(backend);
        encrypted[0]
    }

    /// The server's IP address as the URL writes it (the test server's is one).
    fn host_ip(&self) -> Option<String> {
        let config: postgres::Config = self.url.parse().unwrap();
        match config.get_hosts().first()? {
            postgres::config::Host::Tcp(host) if host.parse::<IpAddr>().is_ok() => {
                Some(host.clone())
            }
            _ => None,
        }
    }
}

/// The error opening `url` gives (it must not open).
fn open_error(url: &str) -> Error {
    match backend::open(url) {
        Ok(_) => panic!("opened, but must be refused: {url}"),
        Err(e) => e,
    }
}

fn storage_error(url: &str) -> String {
    match open_error(url) {
        Error::Storage(m) => {
            assert!(m.starts_with("cannot connect to PostgreSQL: "), "{m}");
            m
        }
        other => panic!("{url}: expected a storage error, got {other:?}"),
    }
}

fn invalid_argument(url: &str) -> String {
    match open_error(url) {
        Error::InvalidArgument(m) => m,
        other => panic!("{url}: expected an invalid argument, got {other:?}"),
    }
}

#[test]
fn require_and_prefer_encrypt_and_disable_does_not() {
    let Some(mut pg) = tls_server() else { return };
    assert!(pg.encrypted_with("sslmode=require"));
    // prefer is the default, and takes TLS when the server offers it.
    assert!(pg.encrypted_with("sslmode=prefer"));
    assert!(pg.encrypted_with("connect_timeout=5"));
    assert!(!pg.encrypted_with("sslmode=disable"));
    // disable ignores a root file, as libpq does.
    let wrong = format!("sslmode=disable&sslrootcert={}", pg.wrong_root);
    assert!(!pg.encrypted_with(&wrong));
}

#[test]
fn verify_full_accepts_the_right_root_and_refuses_a_wrong_one() {
    let Some(mut pg) = tls_server() else { return };
    for root in [pg.root.clone(), pg.cert.clone()] {
        for mode in ["verify-full", "verify-ca", "require", "prefer"] {
            assert!(pg.encrypted_with(&format!("sslmode={mode}&sslrootcert={root}")));
        }
    }
    // A root file makes require and prefer check the chain too (require as in libpq).
    for mode in ["verify-full", "verify-ca", "require", "prefer"] {
        let (url, _) = pg.url_with(&format!("sslmode={mode}&sslrootcert={}", pg.wrong_root));
        let m = storage_error(&url);
        assert!(m.contains("certificate is refused"), "{m}");
        assert!(m.contains(&format!("sslmode={mode}")), "{m}");
        assert!(m.contains("UnknownIssuer"), "{m}");
    }
}

#[test]
fn only_verify_full_checks_the_host_name() {
    let Some(pg) = tls_server() else { return };
    let Some(ip) = pg.host_ip() else {
        eprintln!("postgres TLS host name: skipped (the test server's URL has no IP address)");
        return;
    };
    // Connect to the same server under a name its certificate does not hold.
    let at = format!("@{ip}:");
    assert!(pg.url.contains(&at));
    let renamed = pg.url.replacen(&at, "@db.invalid:", 1);
    let query = |mode: &str| format!("?hostaddr={ip}&sslmode={mode}&sslrootcert={}", pg.root);
    let m = storage_error(&format!("{renamed}{}", query("verify-full")));
    assert!(
        m.contains("not valid for name") && m.contains("db.invalid"),
        "{m}"
    );
    let backend = backend::open(&format!("{renamed}{}", query("verify-ca"))).unwrap();
    assert!(backend.meta_get("nothing").unwrap().is_none());
    drop(backend);
    // Both names of the certificate pass verify-full.
    backend::open(&format!("{}{}", pg.url, query("verify-full"))).unwrap();
    let localhost = pg.url.replacen(&at, "@localhost:", 1);
    backend::open(&format!("{localhost}{}", query("verify-full"))).unwrap();
}

#[test]
fn scram_over_tls_binds_the_channel() {
    let Some(mut pg) = tls_server() else { return };
    let rule: bool = pg
        .admin
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_hba_file_rules \
             WHERE 'mnemo_scram' = ANY(user_name) AND auth_method = 'scram-sha-256')",
            &[],
        )
        .unwrap()
        .get(0);
    if !rule {
        eprintln!("postgres SCRAM: skipped (the server has no scram-sha-256 rule for mnemo_scram)");
        return;
    }
    let database = pg.database.clone();
    pg.admin
        .batch_execute(&format!(
            "DO $$ BEGIN CREATE ROLE mnemo_scram LOGIN; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$; \
             ALTER ROLE mnemo_scram PASSWORD '{PASSWORD}'; \
             ALTER DATABASE {database} OWNER TO mnemo_scram;"
        ))
        .unwrap();
    let as_scram = |password: &str, query: &str| {
        let url = pg
            .url
            .replacen("postgres@", &format!("mnemo_scram:{password}@"), 1);
        assert!(
            url.contains("mnemo_scram:"),
            "the test server's user is postgres"
        );
        format!("{url}?{query}")
    };
    // channel_binding=require fails unless SCRAM-SHA-256-PLUS is used: the server checks
    // the binding (the hash of its certificate) computed here.
    let url = as_scram(PASSWORD, "sslmode=require&channel_binding=require");
    let inst = Instance::open(backend::open(&url).unwrap()).unwrap();
    inst.create_user("bob", None).unwrap();
    drop(inst);
    let root = format!(
        "sslmode=verify-full&sslrootcert={}&channel_binding=require",
        pg.root
    );
    backend::open(&as_scram(PASSWORD, &root)).unwrap();
    // Without TLS there is nothing to bind to.
    let m = storage_error(&as_scram(
        PASSWORD,
        "sslmode=disable&channel_binding=require",
    ));
    assert!(!m.contains(PASSWORD), "{m}");
    // A wrong password is refused, and neither password is in the message.
    let m = storage_error(&as_scram("not-the-Password", "sslmode=require"));
    assert!(m.contains("password authentication failed"), "{m}");
    assert!(
        !m.contains("not-the-Password") && !m.contains(PASSWORD),
        "{m}"
    );
    // A refused certificate with a password in the URL.
    let wrong = format!("sslmode=verify-full&sslrootcert={}", pg.wrong_root);
    let e = open_error(&as_scram(PASSWORD, &wrong));
    assert!(!format!("{e} {e:?}").contains(PASSWORD), "{e:?}");
}

/// What the fake server saw first on a connection.
const FIRST_SSL_REQUEST: &str = "fake server: plain startup after refusing TLS";
const FIRST_STARTUP: &str = "fake server: plain startup, TLS never asked for";

/// A server that answers `N` (no TLS) to every SSLRequest, then refuses the plain startup
/// that may follow with an error saying what it saw. Serves until the test process ends.
fn server_refusing_tls() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = refuse_tls(stream);
        }
    });
    addr
}

fn refuse_tls(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut message = read_startup_packet(&mut stream)?;
    let mut said = FIRST_STARTUP;
    if message == 80_877_103u32.to_be_bytes() {
        stream.write_all(b"N")?;
        said = FIRST_SSL_REQUEST;
        message = read_startup_packet(&mut stream)?;
    }
    assert_eq!(
        &message[..4],
        &196_608u32.to_be_bytes(),
        "protocol 3.0 startup"
    );
    let mut fields = Vec::new();
    for (code, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', "08P01"),
        (b'M', said),
    ] {
        fields.push(code);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut reply = vec![b'E'];
    reply.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
    reply.extend_from_slice(&fields);
    stream.write_all(&reply)
}

/// One untyped packet (an SSLRequest or a StartupMessage): its body after the length.
fn read_startup_packet(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    assert!((8..10_000).contains(&len), "packet length {len}");
    let mut body = vec![0; len - 4];
    stream.read_exact(&mut body)?;
    Ok(body)
}

#[test]
fn a_server_refusing_tls_is_refused_unless_plain_is_allowed() {
    let addr = server_refusing_tls();
    let url = |query: &str| format!("postgres://u:{PASSWORD}@{addr}/db?{query}");
    let root = TempDir::new();
    let root_file = root.0.join("root.pem");
    std::fs::write(
        &root_file,
        include_str!("../../src/backend/postgres/testdata/ca.pem"),
    )
    .unwrap();
    for query in [
        "sslmode=require".to_string(),
        format!("sslmode=verify-ca&sslrootcert={}", root_file.display()),
        format!("sslmode=verify-full&sslrootcert={}", root_file.display()),
    ] {
        let m = storage_error(&url(&query));
        assert!(m.contains("server does not support TLS"), "{query}: {m}");
        assert!(!m.contains(PASSWORD), "{m}");
    }
    // prefer (also the default) falls back to plain; disable never asks.
    for (query, saw) in [
        ("sslmode=prefer", FIRST_SSL_REQUEST),
        ("connect_timeout=5", FIRST_SSL_REQUEST),
        ("sslmode=disable", FIRST_STARTUP),
    ] {
        let m = storage_error(&url(query));
        assert!(m.contains(saw), "{query}: {m}");
        assert!(!m.contains(PASSWORD), "{m}");
    }
}

#[test]
fn bad_tls_options_are_invalid_arguments_naming_the_option() {
    let dir = TempDir::new();
    let not_pem = dir.0.join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let missing = dir.0.join("missing.pem");
    // Port 1: nothing listens, but these are refused before connecting.
    let url = |query: &str| format!("postgres://u:{PASSWORD}@127.0.0.1:1/db?{query}");
    for (query, says) in [
        ("sslmode=bogus".to_string(), "sslmode"),
        ("sslmode=".to_string(), "sslmode"),
        ("sslmode=allow".to_string(), "sslmode"),
        ("sslmode=verify-full".to_string(), "sslrootcert"),
        ("sslmode=verify-ca".to_string(), "sslrootcert"),
        (
            "sslmode=require&sslrootcert=system".to_string(),
            "sslrootcert",
        ),
        ("sslmode=require&sslrootcert=".to_string(), "sslrootcert"),
        (
            format!("sslmode=verify-full&sslrootcert={}", missing.display()),
            "missing.pem",
        ),
        (
            format!("sslmode=require&sslrootcert={}", not_pem.display()),
            "no PEM certificate",
        ),
        ("sslcert=client.pem".to_string(), "sslcert"),
        ("sslnegotiation=sideways".to_string(), "sslnegotiation"),
    ] {
        let m = invalid_argument(&url(&query));
        assert!(m.contains(says), "{query}: {m}");
        assert!(!m.contains(PASSWORD), "{m}");
    }
    // The C ABI's status for them.
    assert_eq!(
        open_error(&url("sslmode=verify-full")).status(),
        mnemo::error::Status::InvalidArgument
    );
    // A good URL to a closed port is a storage error, without the password either.
    let m = storage_error(&url("sslmode=require"));
    assert!(!m.contains(PASSWORD), "{m}");
}
