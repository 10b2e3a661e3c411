//! The PostgreSQL driver (tokio-postgres) run on the caller's thread, with a limit on every
//! wait for the server: connecting (TCP, TLS and login together) within the connect
//! timeout, each call within the call limit. Without them, whatever answers on the server's
//! address decides how long a call waits: one that accepts the connection and never
//! answers held it for ever. A connection whose call ran out of time is not used again
//! (what the server made of the call is unknown) and is closed when the pool drops it.
//!
//! Each connection has a runtime of its own, on one thread, that runs only while a call
//! waits: the connection's task reads and writes the socket then, as the driver's own
//! blocking client does.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use futures_util::future::try_join_all;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Config, GenericClient, IsolationLevel, Row, Socket, Statement, ToStatement};

/// Why a call to the server failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// What the driver or the server said.
    Driver(tokio_postgres::Error),
    /// No answer within this long: the connection is not used again.
    NoAnswer(Duration),
    /// The connection's runtime could not be made.
    Runtime(std::io::Error),
}

impl Failure {
    /// What the driver or the server said, if the call got as far as an answer.
    pub(super) fn driver_error(&self) -> Option<&tokio_postgres::Error> {
        match self {
            Failure::Driver(e) => Some(e),
            Failure::NoAnswer(_) | Failure::Runtime(_) => None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Driver(e) => match std::error::Error::source(e) {
                // The driver's own message is often generic: its cause says more.
                Some(cause) => write!(f, "{e}: {cause}"),
                None => write!(f, "{e}"),
            },
            Failure::NoAnswer(limit) => write!(
                f,
                "the server did not answer within {} ms; the connection is closed",
                limit.as_millis()
            ),
            Failure::Runtime(e) => write!(f, "cannot start the connection's runtime: {e}"),
        }
    }
}

/// Runs `work` on `runtime` until it is done or `limit` has passed; then `broken` is set.
fn within<T>(
    runtime: &Runtime,
    broken: &mut bool,
    limit: Duration,
    work: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, Failure> {
    // The timer is made inside the runtime, whose clock it needs.
    match runtime.block_on(async { tokio::time::timeout(limit, work).await }) {
        Ok(done) => done.map_err(Failure::Driver),
        Err(_) => {
            *broken = true;
            Err(Failure::NoAnswer(limit))
        }
    }
}

/// How long a connection being closed may take to say goodbye to the server.
const CLOSE_LIMIT: Duration = Duration::from_secs(1);

/// One connection to the server.
pub(super) struct Client {
    runtime: Runtime,
    /// Taken when the connection closes.
    client: Option<tokio_postgres::Client>,
    /// The connection's task, which reads and writes its socket.
    task: Option<JoinHandle<Result<(), tokio_postgres::Error>>>,
    /// How long a call may wait for the server's answer.
    call_limit: Duration,
    /// A call ran out of time: the connection is not used again.
    broken: bool,
}

impl Client {
    /// Connects as `config` says, with `tls`, all of it (TCP, TLS, login) within
    /// `connect_limit`; each call made on the connection then waits at most `call_limit`.
    pub(super) fn connect<T>(
        config: &Config,
        tls: T,
        connect_limit: Duration,
        call_limit: Duration,
    ) -> Result<Client, Failure>
    where
        T: MakeTlsConnect<Socket>,
        T::Stream: Send + 'static,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Failure::Runtime)?;
        let mut broken = false;
        let (client, connection) =
            within(&runtime, &mut broken, connect_limit, config.connect(tls))?;
        // Ends when the server closes the connection or the client goes.
        let task = runtime.spawn(connection);
        Ok(Client {
            runtime,
            client: Some(client),
            task: Some(task),
            call_limit,
            broken,
        })
    }

    /// Whether calls may use the connection: no call on it ran out of time, and neither
    /// side closed it.
    pub(super) fn is_usable(&self) -> bool {
        !self.broken && !self.driver().is_closed()
    }

    /// Whether the server (or the network) closed the connection, as opposed to a call on
    /// it running out of time.
    pub(super) fn was_closed(&self) -> bool {
        !self.broken && self.driver().is_closed()
    }

    /// The driver's client, there until the connection is dropped.
    fn driver(&self) -> &tokio_postgres::Client {
        self.client.as_ref().expect("open until dropped")
    }

    /// Lets the connection read what the server sent while nothing called it and has
    /// arrived already (a server ending the session says so), without waiting: a few turns
    /// of the runtime, each polling the socket without blocking (microseconds).
    pub(super) fn take_news(&mut self) {
        self.runtime.block_on(async {
            // A yield lets the runtime poll the socket, the next the connection's task read
            // what it found, the last that task see the end that followed.
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
        });
    }

    /// Lets the connection read what the server sent while nothing called it (a server
    /// ending the session says so), waiting `wait`.
    pub(super) fn settle(&mut self, wait: Duration) {
        self.runtime.block_on(async {
            tokio::time::sleep(wait).await;
            // The wait's end and the socket's news may come in one wake-up, and the runtime
            // resumes this future before the tasks it woke: yielding once lets the
            // connection's task read the news first (on a loaded machine, it otherwise
            // missed it).
            tokio::task::yield_now().await;
        });
    }

    /// Prepares each of `sqls`, all sent at once: one round trip to the server, not one each.
    pub(super) fn prepare_all(&mut self, sqls: &[String]) -> Result<Vec<Statement>, Failure> {
        let client = self.client.as_ref().expect("open until dropped");
        let all = try_join_all(sqls.iter().map(|sql| client.prepare(sql)));
        within(&self.runtime, &mut self.broken, self.call_limit, all)
    }

    /// Begins a transaction (committed by [`Transaction::commit`], rolled back if dropped).
    pub(super) fn transaction(&mut self) -> Result<Transaction<'_>, Failure> {
        self.begin(false)
    }

    /// Begins a read-only transaction that sees one snapshot throughout (repeatable read).
    pub(super) fn snapshot(&mut self) -> Result<Transaction<'_>, Failure> {
        self.begin(true)
    }

    /// Begins a transaction, a read-only repeatable-read one when `snapshot`.
    fn begin(&mut self, snapshot: bool) -> Result<Transaction<'_>, Failure> {
        let Client {
            runtime,
            client,
            call_limit,
            broken,
            ..
        } = self;
        let mut builder = client
            .as_mut()
            .expect("open until dropped")
            .build_transaction();
        if snapshot {
            builder = builder
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true);
        }
        let tx = within(runtime, broken, *call_limit, builder.start())?;
        Ok(Transaction {
            runtime,
            broken,
            limit: *call_limit,
            tx: Some(tx),
        })
    }
}

/// A transaction on a [`Client`].
pub(super) struct Transaction<'a> {
    runtime: &'a Runtime,
    broken: &'a mut bool,
    limit: Duration,
    /// Taken by [`Transaction::commit`].
    tx: Option<tokio_postgres::Transaction<'a>>,
}

impl Transaction<'_> {
    /// Commits the transaction.
    pub(super) fn commit(mut self) -> Result<(), Failure> {
        let tx = self.tx.take().expect("a transaction is committed once");
        within(self.runtime, self.broken, self.limit, tx.commit())
    }

    /// Runs `sql` (statements without parameters), waiting at most `limit` rather than the
    /// call limit: for work whose time grows with what is stored (a schema upgrade).
    pub(super) fn batch_execute_within(
        &mut self,
        sql: &str,
        limit: Duration,
    ) -> Result<(), Failure> {
        let tx = self.tx.as_ref().expect("an open transaction");
        within(self.runtime, self.broken, limit, tx.batch_execute(sql))
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            if !*self.broken {
                let _ = within(self.runtime, self.broken, self.limit, tx.rollback());
            }
        }
    }
}

/// Runs statements, each call waiting at most the call limit: on a [`Client`] or in one of
/// its [`Transaction`]s.
pub(super) trait Statements {
    /// The driver's client or transaction under this one, with its runtime, broken mark and
    /// call limit.
    fn parts(&mut self) -> (&Runtime, &mut bool, Duration, &(impl GenericClient + Sync));

    /// The rows of `statement` run with `params`.
    fn query<T>(
        &mut self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Failure>
    where
        T: ?Sized + ToStatement + Sync + Send,
    {
        let (runtime, broken, limit, on) = self.parts();
        within(runtime, broken, limit, on.query(statement, params))
    }

    /// The one row of `statement` run with `params` (an error for none or more).
    fn query_one<T>(
        &mut self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, Failure>
    where
        T: ?Sized + ToStatement + Sync + Send,
    {
        let (runtime, broken, limit, on) = self.parts();
        within(runtime, broken, limit, on.query_one(statement, params))
    }

    /// The row, if any, of `statement` run with `params` (an error for more than one).
    fn query_opt<T>(
        &mut self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Failure>
    where
        T: ?Sized + ToStatement + Sync + Send,
    {
        let (runtime, broken, limit, on) = self.parts();
        within(runtime, broken, limit, on.query_opt(statement, params))
    }

    /// Runs `statement` with `params`: the number of rows it changed.
    fn execute<T>(&mut self, statement: &T, params: &[&(dyn ToSql + Sync)]) -> Result<u64, Failure>
    where
        T: ?Sized + ToStatement + Sync + Send,
    {
        let (runtime, broken, limit, on) = self.parts();
        within(runtime, broken, limit, on.execute(statement, params))
    }

    /// Runs `sql`, statements without parameters.
    fn batch_execute(&mut self, sql: &str) -> Result<(), Failure> {
        let (runtime, broken, limit, on) = self.parts();
        within(runtime, broken, limit, on.batch_execute(sql))
    }
}

impl Statements for Client {
    fn parts(&mut self) -> (&Runtime, &mut bool, Duration, &(impl GenericClient + Sync)) {
        let client = self.client.as_ref().expect("open until dropped");
        (&self.runtime, &mut self.broken, self.call_limit, client)
    }
}

impl Drop for Client {
    /// Closes the connection as the protocol asks (the server otherwise logs each close as
    /// an error): with the client gone, the connection's task tells the server and ends,
    /// given at most [`CLOSE_LIMIT`]. One whose call ran out of time is just dropped.
    fn drop(&mut self) {
        drop(self.client.take());
        if let Some(task) = self.task.take() {
            if !self.broken {
                let _ = self
                    .runtime
                    .block_on(async { tokio::time::timeout(CLOSE_LIMIT, task).await });
            }
        }
    }
}

impl Statements for Transaction<'_> {
    fn parts(&mut self) -> (&Runtime, &mut bool, Duration, &(impl GenericClient + Sync)) {
        let tx = self.tx.as_ref().expect("an open transaction");
        (self.runtime, &mut *self.broken, self.limit, tx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_past_its_limit_fails_and_marks_the_connection_broken() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut broken = false;
        let never = std::future::pending::<Result<(), tokio_postgres::Error>>();
        let limit = Duration::from_millis(20);
        let failed = within(&runtime, &mut broken, limit, never).unwrap_err();
        assert!(
            matches!(failed, Failure::NoAnswer(l) if l == limit),
            "{failed}"
        );
        assert!(failed.to_string().contains("did not answer within 20 ms"));
        assert!(broken);
        let mut fine = false;
        let answered = async { Ok::<_, tokio_postgres::Error>(7) };
        assert_eq!(within(&runtime, &mut fine, limit, answered).unwrap(), 7);
        assert!(!fine);
    }
}
