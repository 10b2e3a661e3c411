//! A `postgres://` URL: the TLS options mnemo reads itself (`sslmode`, `sslrootcert`, with
//! libpq's meaning) and the rest, which goes to the driver's parser.
//!
//! The driver (tokio-postgres) knows only `sslmode=disable|prefer|require`, so both options
//! are taken out of the query string here and the remaining URL is handed on unchanged.
//! Messages never repeat the URL: it may hold a password.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{quoted, Error, Result};

/// How a connection to PostgreSQL uses TLS: the URL's `sslmode`, as libpq reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// `disable`: plain TCP, never TLS.
    Disable,
    /// `prefer` (the default): TLS if the server offers it, else plain. The certificate is
    /// not checked, unless `sslrootcert` is given (then as for `verify-ca`).
    Prefer,
    /// `require`: TLS or no connection. The certificate is not checked, unless
    /// `sslrootcert` is given (then as for `verify-ca`, as libpq does).
    Require,
    /// `verify-ca`: TLS, and the server's certificate must lead to one in `sslrootcert`.
    VerifyCa,
    /// `verify-full`: as `verify-ca`, and the URL's host name or IP address must be one the
    /// certificate names (its subjectAltName entries).
    VerifyFull,
}

impl SslMode {
    /// Reads an `sslmode` value. [`Error::InvalidArgument`] for anything else than the five
    /// modes (`allow` included: mnemo does not support it).
    pub fn parse(value: &str) -> Result<SslMode> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(Error::invalid(
                    "sslmode=allow is not supported by mnemo (use disable, prefer or require)",
                ))
            }
            other => {
                return Err(Error::invalid(format!(
                    "invalid value {} for option sslmode (expected disable, prefer, require, \
                     verify-ca or verify-full)",
                    quoted(other)
                )))
            }
        })
    }

    /// The mode's name as written in a URL, e.g. `"verify-full"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// True for the modes that refuse a connection without TLS.
    pub fn requires_tls(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A checked `postgres://` (or `postgresql://`) URL, not yet connected. Its `Debug` shows
/// the TLS options only, never the URL (which may hold a password).
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl {
    /// The URL without `sslmode` and `sslrootcert`, for the driver's parser.
    driver_url: String,
    /// The names of the options in `driver_url` (which [`PostgresUrl::driver_config`] does
    /// not set for it).
    driver_options: Vec<String>,
    ssl_mode: SslMode,
    root_cert: Option<PathBuf>,
    lock_timeout: Duration,
    max_connections: usize,
    idle_timeout: Duration,
    call_timeout: Duration,
    /// The URL's `connect_timeout`, or [`CONNECT_TIMEOUT`].
    connect_limit: Duration,
}

/// How long a statement waits for a lock (a database's, held by another process's write)
/// before it fails with [`Error::Busy`]: the URL's `lock_timeout`, in milliseconds.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest `lock_timeout`, `idle_timeout` or `call_timeout` a URL may ask for (one
/// hour).
const MAX_TIMEOUT_MS: u64 = 3_600_000;
/// How many connections an instance keeps to the server at most: the URL's
/// `max_connections`, 1 to [`MAX_CONNECTIONS`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 4;
/// What mnemo's connections are called on the server (`pg_stat_activity`, the server's
/// logs) when the URL does not say (`application_name`).
pub const DEFAULT_APPLICATION_NAME: &str = "mnemo";
/// The most `max_connections` a URL may ask for.
const MAX_CONNECTIONS: usize = 64;
/// How long a connection beyond the first may stay idle before the instance closes it: the
/// URL's `idle_timeout`, in milliseconds.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a call waits for the server's answer beyond `lock_timeout` (a call may wait
/// that long for a lock first) before it fails and its connection is closed: the URL's
/// `call_timeout`, in milliseconds.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long connecting may take, unless the URL says (`connect_timeout`, in seconds).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP keepalive, unless the URL says (`keepalives`, `keepalives_idle`, ...): probes start
/// after this long without traffic...
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// ...are sent this often...
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// ...and this many unanswered ones end the connection (a dead server is noticed within
/// about two minutes, instead of the system's default of hours).
const KEEPALIVE_RETRIES: u32 = 6;
/// Keepalive probes only a connection with nothing in flight: data of a call that the
/// server stops acknowledging (it died, or the network between went away, mid-call) ends
/// the connection after this long, instead of retransmissions for about 15 minutes; unless
/// the URL says (`tcp_user_timeout`, in seconds as the driver reads it).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(120);

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresUrl")
            .field("ssl_mode", &self.ssl_mode)
            .field("root_cert", &self.root_cert)
            .field("lock_timeout", &self.lock_timeout)
            .field("max_connections", &self.max_connections)
            .field("idle_timeout", &self.idle_timeout)
            .field("call_timeout", &self.call_timeout)
            .field("connect_limit", &self.connect_limit)
            .finish_non_exhaustive()
    }
}

impl PostgresUrl {
    /// Checks a URL without connecting or reading any file: its scheme, `sslmode`,
    /// `sslrootcert` (required by `verify-ca` and `verify-full`; `system` is not supported),
    /// and everything else with the driver's parser. [`Error::InvalidArgument`], naming the
    /// option at fault, otherwise.
    pub fn parse(url: &str) -> Result<PostgresUrl> {
        let rest = ["postgres://", "postgresql://"]
            .iter()
            .find_map(|prefix| url.strip_prefix(prefix))
            .ok_or_else(|| {
                Error::invalid("a PostgreSQL URL starts with postgres:// or postgresql://")
            })?;
        // The driver's parser ends the credentials at the first '@' (a password may hold a
        // '?'), then the host at '/' or '?', the path at '?': find the query the same way.
        let after_credentials = rest.find('@').map_or(0, |at| at + 1);
        let (base, query) = match rest[after_credentials..].find('?') {
            Some(i) => url.split_at(url.len() - rest.len() + after_credentials + i),
            None => (url, ""),
        };
        let query = query.strip_prefix('?').unwrap_or(query);

        let mut kept = Vec::new();
        let mut driver_options = Vec::new();
        let mut mode = None;
        let mut root = None;
        let mut lock_timeout = DEFAULT_LOCK_TIMEOUT;
        let mut max_connections = DEFAULT_MAX_CONNECTIONS;
        let mut idle_timeout = DEFAULT_IDLE_TIMEOUT;
        let mut call_timeout = DEFAULT_CALL_TIMEOUT;
        for param in query.split('&').filter(|p| !p.is_empty()) {
            let Some((key, value)) = param.split_once('=') else {
                return Err(Error::invalid(
                    "malformed postgres URL: a query parameter has no '='",
                ));
            };
            match percent_decode(key).as_deref() {
                Some("sslmode") => mode = Some(decoded(value, "sslmode")?),
                Some("sslrootcert") => root = Some(decoded(value, "sslrootcert")?),
                Some("lock_timeout") => lock_timeout = milliseconds_of(value, "lock_timeout")?,
                Some("max_connections") => max_connections = max_connections_of(value)?,
                Some("idle_timeout") => idle_timeout = milliseconds_of(value, "idle_timeout")?,
                Some("call_timeout") => call_timeout = milliseconds_of(value, "call_timeout")?,
                other => {
                    driver_options.push(other.unwrap_or(key).to_string());
                    kept.push(param);
                }
            }
        }
        let driver_url = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let parsed = driver_url
            .parse::<tokio_postgres::Config>()
            .map_err(malformed)?;
        // The driver ignores a time of 0 or less: bounded all the same.
        let connect_limit = parsed
            .get_connect_timeout()
            .copied()
            .unwrap_or(CONNECT_TIMEOUT);

        let ssl_mode = match mode {
            Some(mode) => SslMode::parse(&mode)?,
            None => SslMode::Prefer,
        };
        let root_cert =
            match root {
                None => None,
                Some(path) if path.is_empty() => {
                    return Err(Error::invalid(
                        "option sslrootcert is empty: name a PEM file",
                    ))
                }
                Some(path) if path == "system" => return Err(Error::invalid(
                    "sslrootcert=system (the operating system's certificates) is not supported \
                     by mnemo: name a PEM file",
                )),
                Some(path) => Some(PathBuf::from(path)),
            };
        if matches!(ssl_mode, SslMode::VerifyCa | SslMode::VerifyFull) && root_cert.is_none() {
            return Err(Error::invalid(format!(
                "sslmode={ssl_mode} needs sslrootcert=PATH, a PEM file of the certificate \
                 authority (mnemo does not read ~/.postgresql/root.crt)"
            )));
        }
        Ok(PostgresUrl {
            driver_url,
            driver_options,
            ssl_mode,
            root_cert,
            lock_timeout,
            max_connections,
            idle_timeout,
            call_timeout,
            connect_limit,
        })
    }

    /// How long a statement waits for a lock before it fails (the URL's `lock_timeout` in
    /// milliseconds, 1 to 3,600,000; 30 s when absent).
    pub fn lock_timeout(&self) -> Duration {
        self.lock_timeout
    }

    /// How many connections an instance keeps to the server at most, shared by its threads
    /// (the URL's `max_connections`, 1 to 64; 4 when absent).
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// How long a connection beyond the first may stay idle before the instance closes it
    /// (the URL's `idle_timeout` in milliseconds, 1 to 3,600,000; 60 s when absent).
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// How long a call waits for the server's answer: the URL's `lock_timeout` and
    /// `call_timeout` (in milliseconds, 1 to 3,600,000; 60 s when absent) together.
    pub fn call_limit(&self) -> Duration {
        self.lock_timeout + self.call_timeout
    }

    /// How long connecting (TCP, TLS and login together) may take: the URL's
    /// `connect_timeout` (in seconds, as the driver reads it), 10 s when absent.
    pub fn connect_limit(&self) -> Duration {
        self.connect_limit
    }

    /// The `sslmode` (`prefer` when the URL has none).
    pub fn ssl_mode(&self) -> SslMode {
        self.ssl_mode
    }

    /// The `sslrootcert` file, if given (ignored with `sslmode=disable`).
    pub fn root_cert(&self) -> Option<&Path> {
        self.root_cert.as_deref()
    }

    /// The driver's configuration: everything but the TLS options, with its `sslmode` set to
    /// what the driver knows (`verify-*` are `require` with a verifying connector), and
    /// what the URL does not set set to mnemo's defaults: `application_name`
    /// ([`DEFAULT_APPLICATION_NAME`]), bounds on connecting ([`CONNECT_TIMEOUT`]) and on a
    /// server that stops answering (keepalive, [`TCP_USER_TIMEOUT`]).
    pub(super) fn driver_config(&self) -> Result<tokio_postgres::Config> {
        let mut config: tokio_postgres::Config = self.driver_url.parse().map_err(malformed)?;
        let given = |option: &str| self.driver_options.iter().any(|o| o == option);
        if config.get_application_name().is_none() {
            config.application_name(DEFAULT_APPLICATION_NAME);
        }
        config.connect_timeout(self.connect_limit);
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        if !given("keepalives") {
            config.keepalives(true);
        }
        if !given("keepalives_idle") {
            config.keepalives_idle(KEEPALIVE_IDLE);
        }
        if !given("keepalives_interval") {
            config.keepalives_interval(KEEPALIVE_INTERVAL);
        }
        if !given("keepalives_retries") {
            config.keepalives_retries(KEEPALIVE_RETRIES);
        }
        config.ssl_mode(match self.ssl_mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
        Ok(config)
    }
}

/// The value of option `name`, a time: whole milliseconds, 1 to [`MAX_TIMEOUT_MS`].
fn milliseconds_of(value: &str, name: &str) -> Result<Duration> {
    decoded(value, name)?
        .parse::<u64>()
        .ok()
        .filter(|ms| (1..=MAX_TIMEOUT_MS).contains(ms))
        .map(Duration::from_millis)
        .ok_or_else(|| {
            Error::invalid(format!(
                "option {name} is a number of milliseconds from 1 to {MAX_TIMEOUT_MS}"
            ))
        })
}

/// A `max_connections` value: 1 to [`MAX_CONNECTIONS`].
fn max_connections_of(value: &str) -> Result<usize> {
    decoded(value, "max_connections")?
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_CONNECTIONS).contains(n))
        .ok_or_else(|| {
            Error::invalid(format!(
                "option max_connections is a number from 1 to {MAX_CONNECTIONS}"
            ))
        })
}

/// The driver's refusal of a URL, with its cause (which names the option, never a value).
fn malformed(e: tokio_postgres::Error) -> Error {
    match std::error::Error::source(&e) {
        Some(cause) => Error::invalid(format!("malformed postgres URL: {e}: {cause}")),
        None => Error::invalid(format!("malformed postgres URL: {e}")),
    }
}

/// The percent-decoded UTF-8 text of an option's value.
fn decoded(value: &str, option: &str) -> Result<String> {
    percent_decode(value).ok_or_else(|| {
        Error::invalid(format!(
            "option {option}: bad percent-encoding or not UTF-8"
        ))
    })
}

/// Decodes `%XX` escapes (as the driver does for every part of the URL); `None` for a
/// malformed escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(url: &str) -> PostgresUrl {
        PostgresUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    fn refused(url: &str) -> String {
        match PostgresUrl::parse(url) {
            Err(Error::InvalidArgument(m)) => m,
            other => panic!("{url}: {other:?}"),
        }
    }

    #[test]
    fn modes_and_root_are_read_and_taken_out() {
        let u = parsed("postgres://u@h/d");
        assert_eq!((u.ssl_mode(), u.root_cert()), (SslMode::Prefer, None));
        assert_eq!(u.driver_url, "postgres://u@h/d");

        let u = parsed(
            "postgresql://u@h:5433/d?application_name=x&sslmode=verify-full&sslrootcert=%2Ftmp%2Fca%20x.pem&connect_timeout=3",
        );
        assert_eq!(u.ssl_mode(), SslMode::VerifyFull);
        assert_eq!(u.root_cert(), Some(Path::new("/tmp/ca x.pem")));
        assert_eq!(
            u.driver_url,
            "postgresql://u@h:5433/d?application_name=x&connect_timeout=3"
        );
        for (value, mode) in [
            ("disable", SslMode::Disable),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::VerifyCa),
        ] {
            let u = parsed(&format!("postgres://h/d?sslrootcert=r.pem&sslmode={value}"));
            assert_eq!(u.ssl_mode(), mode);
            assert_eq!(u.driver_url, "postgres://h/d");
        }
        // The last value wins, as in libpq; an encoded key is still the option.
        assert_eq!(
            parsed("postgres://h/d?sslmode=disable&ssl%6dode=require").ssl_mode(),
            SslMode::Require
        );
    }

    #[test]
    fn the_driver_gets_its_sslmode() {
        use tokio_postgres::config::SslMode as Driver;
        for (url, driver) in [
            ("postgres://h/d?sslmode=disable", Driver::Disable),
            ("postgres://h/d", Driver::Prefer),
            ("postgres://h/d?sslmode=require", Driver::Require),
            (
                "postgres://h/d?sslmode=verify-ca&sslrootcert=r",
                Driver::Require,
            ),
            (
                "postgres://h/d?sslmode=verify-full&sslrootcert=r",
                Driver::Require,
            ),
        ] {
            assert_eq!(
                parsed(url).driver_config().unwrap().get_ssl_mode(),
                driver,
                "{url}"
            );
        }
    }

    #[test]
    fn lock_idle_and_call_timeouts_are_whole_milliseconds_within_an_hour() {
        let absent = parsed("postgres://h/d");
        assert_eq!(absent.lock_timeout(), DEFAULT_LOCK_TIMEOUT);
        assert_eq!(absent.idle_timeout(), DEFAULT_IDLE_TIMEOUT);
        assert_eq!(
            absent.call_limit(),
            DEFAULT_LOCK_TIMEOUT + DEFAULT_CALL_TIMEOUT
        );
        assert_eq!(absent.connect_limit(), CONNECT_TIMEOUT);
        let u = parsed(
            "postgres://h/d?lock_timeout=250&sslmode=disable&idle_timeout=20&call_timeout=7\
             &connect_timeout=3",
        );
        assert_eq!(u.lock_timeout(), Duration::from_millis(250));
        assert_eq!(u.idle_timeout(), Duration::from_millis(20));
        assert_eq!(u.call_limit(), Duration::from_millis(257));
        assert_eq!(u.connect_limit(), Duration::from_secs(3));
        for name in ["lock_timeout", "idle_timeout", "call_timeout"] {
            assert!(!u.driver_url.contains(name));
        }
        let longest = parsed("postgres://h/d?lock_timeout=3600000&idle_timeout=3600000");
        assert_eq!(longest.lock_timeout(), Duration::from_secs(3600));
        assert_eq!(longest.idle_timeout(), Duration::from_secs(3600));
        for name in ["lock_timeout", "idle_timeout", "call_timeout"] {
            for bad in ["0", "3600001", "-1", "1e3", "", "%zz"] {
                let url = format!("postgres://h/d?{name}={bad}");
                let e = PostgresUrl::parse(&url).unwrap_err();
                assert!(matches!(e, Error::InvalidArgument(_)), "{bad}: {e:?}");
                assert!(e.to_string().contains(name), "{bad}: {e}");
            }
        }
    }

    #[test]
    fn connecting_and_unanswered_calls_are_bounded_unless_the_url_says_otherwise() {
        let absent = parsed("postgres://h/d").driver_config().unwrap();
        assert_eq!(absent.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        assert_eq!(absent.get_tcp_user_timeout(), Some(&TCP_USER_TIMEOUT));
        assert!(absent.get_keepalives());
        assert_eq!(absent.get_keepalives_idle(), KEEPALIVE_IDLE);
        assert_eq!(absent.get_keepalives_interval(), Some(KEEPALIVE_INTERVAL));
        assert_eq!(absent.get_keepalives_retries(), Some(KEEPALIVE_RETRIES));
        let given = parsed(
            "postgres://h/d?connect_timeout=3&tcp_user_timeout=30&keepalives_idle=20\
             &keepalives_interval=5&keepalives_retries=2",
        )
        .driver_config()
        .unwrap();
        assert_eq!(given.get_connect_timeout(), Some(&Duration::from_secs(3)));
        assert_eq!(given.get_tcp_user_timeout(), Some(&Duration::from_secs(30)));
        assert_eq!(given.get_keepalives_idle(), Duration::from_secs(20));
        assert_eq!(
            given.get_keepalives_interval(),
            Some(Duration::from_secs(5))
        );
        assert_eq!(given.get_keepalives_retries(), Some(2));
        assert!(!parsed("postgres://h/d?keepalives=0")
            .driver_config()
            .unwrap()
            .get_keepalives());
        // No timeout (0) is not taken: connecting stays bounded.
        let zero = parsed("postgres://h/d?connect_timeout=0&tcp_user_timeout=0");
        let zero = zero.driver_config().unwrap();
        assert_eq!(zero.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        assert_eq!(zero.get_tcp_user_timeout(), Some(&TCP_USER_TIMEOUT));
    }

    #[test]
    fn connections_are_called_mnemo_unless_the_url_names_them() {
        let name = |url: &str| {
            let config = parsed(url).driver_config().unwrap();
            config.get_application_name().map(str::to_string)
        };
        assert_eq!(
            name("postgres://h/d").as_deref(),
            Some(DEFAULT_APPLICATION_NAME)
        );
        assert_eq!(
            name("postgres://h/d?application_name=app").as_deref(),
            Some("app")
        );
    }

    #[test]
    fn max_connections_is_a_number_from_1_to_64() {
        assert_eq!(
            parsed("postgres://h/d").max_connections(),
            DEFAULT_MAX_CONNECTIONS
        );
        let u = parsed("postgres://h/d?max_connections=1&sslmode=disable");
        assert_eq!(u.max_connections(), 1);
        assert!(!u.driver_url.contains("max_connections"));
        assert_eq!(
            parsed("postgres://h/d?max_connections=64").max_connections(),
            64
        );
        for bad in ["0", "65", "-1", "2.5", "", "%zz", "99999999999999999999999"] {
            let url = format!("postgres://h/d?max_connections={bad}");
            let e = PostgresUrl::parse(&url).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{bad}: {e:?}");
            assert!(e.to_string().contains("max_connections"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_question_mark_in_the_password_is_not_the_query() {
        let u = parsed("postgres://u:pa?sslmode=disable@h/d?sslmode=require");
        assert_eq!(u.ssl_mode(), SslMode::Require);
        assert_eq!(u.driver_url, "postgres://u:pa?sslmode=disable@h/d");
    }

    #[test]
    fn bad_values_are_refused_naming_the_option() {
        for (url, option) in [
            ("postgres://h/d?sslmode=bogus", "sslmode"),
            ("postgres://h/d?sslmode=", "sslmode"),
            ("postgres://h/d?sslmode=VERIFY-FULL", "sslmode"),
            ("postgres://h/d?sslmode=allow", "sslmode"),
            ("postgres://h/d?sslmode=%ff", "sslmode"),
            ("postgres://h/d?sslmode=verify-ca", "sslrootcert"),
            ("postgres://h/d?sslmode=verify-full", "sslrootcert"),
            ("postgres://h/d?sslmode=require&sslrootcert=", "sslrootcert"),
            ("postgres://h/d?sslrootcert=system", "sslrootcert"),
            ("postgres://h/d?sslrootcert=%zz", "sslrootcert"),
            ("postgres://h/d?sslcert=c.pem", "sslcert"),
            ("postgres://h:nope/d", "port"),
        ] {
            let message = refused(url);
            assert!(message.contains(option), "{url}: {message}");
        }
        assert!(refused("postgres://h/d?sslmode").contains("no '='"));
        assert!(refused("postgres:h").contains("postgres://"));
    }

    #[test]
    fn messages_and_debug_never_show_the_password() {
        for url in [
            "postgres://u:Hunter2pw@h/d?sslmode=bogus",
            "postgres://u:Hunter2pw@h/d?sslmode=verify-full",
            "postgres://u:Hunter2pw@h/d?sslrootcert=system",
            "postgres://u:Hunter2pw@h/d?nosuch=1",
            "postgres://u:Hunter2pw@h:nope/d",
            "postgres://u:Hunter2pw@h/d?password",
            "postgres://h/d?password=Hunter2pw&sslmode=bogus",
            "postgres://h/d?password=Hunter2pw&port=x",
        ] {
            let message = refused(url);
            assert!(!message.contains("Hunter2pw"), "{url}: {message}");
        }
        let u = parsed("postgres://u:Hunter2pw@h/d?sslmode=require&password=Hunter2pw");
        assert!(!format!("{u:?}").contains("Hunter2pw"));
    }
}
