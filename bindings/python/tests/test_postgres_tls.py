"""PostgreSQL over TLS, and the URL's other options, through the Python package.

The server tests need the test server of ``scripts/test-all`` (``MNEMO_TEST_POSTGRES_URL``,
``MNEMO_TEST_POSTGRES_TLS_ROOT``: the CA of its certificate, ``MNEMO_TEST_POSTGRES_TLS_WRONG_ROOT``:
another CA) and ``psql`` to make a fresh database; they skip otherwise.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import threading
import time

import pytest

import mnemo
from conftest import PSQL, POSTGRES_URL as URL, psql, wait_until
from proxy import Proxy

ROOT = os.environ.get("MNEMO_TEST_POSTGRES_TLS_ROOT")
WRONG_ROOT = os.environ.get("MNEMO_TEST_POSTGRES_TLS_WRONG_ROOT")

#: Must never appear in an error message.
SECRET = "Sup3r-Secret-Pw"

needs_server = pytest.mark.skipif(
    not (URL and ROOT and WRONG_ROOT and PSQL),
    reason="needs the TLS test server (MNEMO_TEST_POSTGRES_URL, MNEMO_TEST_POSTGRES_TLS_*) "
    "and psql",
)


@needs_server
def test_verify_full_with_the_servers_ca_opens_an_encrypted_session(database_url: str) -> None:
    app = "mnemo_py_" + secrets.token_hex(4)
    url = f"{database_url}?sslmode=verify-full&sslrootcert={ROOT}&application_name={app}"
    with mnemo.Instance.open(url) as inst:
        inst.create_user("alice")
        with inst.login("alice") as alice:
            with alice.create_db("notes") as db:
                db.set("todo", "milk", {"over": "tls"})
                assert db.get("todo", "milk") == {"over": "tls"}
        encrypted = psql(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
            f"WHERE a.application_name = '{app}'"
        )
        assert encrypted == "t"


@needs_server
def test_a_wrong_root_is_a_storage_error(database_url: str) -> None:
    url = database_url.replace("//postgres@", f"//postgres:{SECRET}@", 1)
    assert SECRET in url, "the test server's user is postgres"
    with pytest.raises(mnemo.StorageError) as refused:
        mnemo.Instance.open(f"{url}?sslmode=verify-full&sslrootcert={WRONG_ROOT}")
    assert refused.value.status == mnemo.Status.STORAGE
    assert "certificate is refused" in refused.value.message
    assert SECRET not in str(refused.value)


@pytest.mark.parametrize(
    ("query", "option"),
    [
        ("sslmode=bogus", "sslmode"),
        ("sslmode=verify-full", "sslrootcert"),
        ("sslmode=verify-ca&sslrootcert=/nonexistent/root.pem", "/nonexistent/root.pem"),
    ],
)
def test_bad_tls_options_are_invalid_arguments(query: str, option: str) -> None:
    # Port 1: nothing listens there, but these are refused before connecting.
    with pytest.raises(mnemo.InvalidArgument) as refused:
        mnemo.Instance.open(f"postgres://u:{SECRET}@127.0.0.1:1/db?{query}")
    assert isinstance(refused.value, ValueError)
    assert option in refused.value.message
    assert SECRET not in str(refused.value)


@pytest.mark.parametrize(
    ("option", "value"),
    [("lock_timeout", v) for v in ["0", "-5", "abc", "1.5", "3600001", ""]]
    + [("max_connections", v) for v in ["0", "65", "-1", "two", "1.5", ""]]
    + [("idle_timeout", v) for v in ["0", "3600001", "-1", "1e3", ""]]
    + [("call_timeout", v) for v in ["0", "3600001", "-1", "1e3", ""]],
)
def test_a_bad_number_option_is_an_invalid_argument(option: str, value: str) -> None:
    # Refused before connecting, like the TLS options.
    with pytest.raises(mnemo.InvalidArgument) as refused:
        mnemo.Instance.open(f"postgres://u:{SECRET}@127.0.0.1:1/db?{option}={value}")
    assert option in refused.value.message
    assert SECRET not in str(refused.value)


@pytest.mark.parametrize("sslmode", ["disable", "prefer", "require"])
def test_a_server_that_accepts_and_never_answers_fails_the_open_in_connect_timeout(
    sslmode: str,
) -> None:
    silent = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(silent.accept()[0]), daemon=True).start()
    port = silent.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(mnemo.StorageError, match="did not answer within 1000 ms"):
        mnemo.Instance.open(f"postgres://u@127.0.0.1:{port}/d?sslmode={sslmode}&connect_timeout=1")
    assert time.monotonic() - started < 10
    assert len(held) == 1, "the open reached the silent server"
    silent.close()


def test_a_server_that_stops_answering_fails_the_call_and_the_next_connects_again(
    database_url: str,
) -> None:
    server = database_url.split("@", 1)[1].split("/", 1)[0]
    proxy = Proxy(server)
    url = database_url.replace(server, proxy.addr, 1)
    sep = "&" if "?" in url else "?"
    options = "lock_timeout=400&call_timeout=600&max_connections=1"
    with mnemo.Instance.open(f"{url}{sep}{options}") as inst:
        inst.create_user("u")
        with inst.login("u") as user, user.create_db("d") as db:
            db.set("s", "k", 1)
            proxy.freeze()
            started = time.monotonic()
            with pytest.raises(mnemo.StorageError, match="did not answer within 1000 ms"):
                db.set("s", "k", 2)
            assert time.monotonic() - started < 10
            proxy.thaw()
            db.set("s", "k", 3)  # on a new connection
            assert db.get("s", "k") == 3
    proxy.close()


def test_connections_are_closed_as_the_protocol_asks(database_url: str) -> None:
    database = database_url.rsplit("/", 1)[1]
    sep = "&" if "?" in database_url else "?"
    with mnemo.Instance.open(f"{database_url}{sep}max_connections=4&idle_timeout=100") as inst:
        inst.create_user("u")
        with inst.login("u") as user:
            commit_from_four_threads(user, 20)
        time.sleep(0.5)  # the idle ones closed by the instance
    # The server counts sessions that ended without a goodbye (it logs each as an error).
    query = f"SELECT sessions, sessions_abandoned FROM pg_stat_database WHERE datname = '{database}'"
    deadline = time.monotonic() + 10
    while (counts := [int(n) for n in psql(query).split("|")])[0] < 2:
        assert time.monotonic() < deadline, f"sessions not counted: {counts}"
        time.sleep(0.1)
    assert counts[1] == 0, f"{counts[1]} of {counts[0]} sessions abandoned"


def commit_from_four_threads(user: mnemo.User, commits: int) -> list[mnemo.Database]:
    """Four databases of `user`, each given `commits` commits by a thread of its own, all
    at once; returns them."""
    dbs = [user.create_db(f"d{i}") for i in range(4)]

    def commit(db: mnemo.Database) -> None:
        for i in range(commits):
            db.set("s", f"k{i}", i)

    threads = [threading.Thread(target=commit, args=(db,)) for db in dbs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return dbs


def test_one_connection_serves_every_thread(database_url: str) -> None:
    sep = "&" if "?" in database_url else "?"
    with mnemo.Instance.open(f"{database_url}{sep}max_connections=1") as inst:
        inst.create_user("u")
        with inst.login("u") as user:
            dbs = commit_from_four_threads(user, 20)
            assert all(db.get("s", "k19") == 19 for db in dbs)


def test_connections_beyond_one_are_closed_once_idle(database_url: str) -> None:
    app = "mnemo_py_idle_" + secrets.token_hex(4)
    sep = "&" if "?" in database_url else "?"
    options = f"max_connections=4&idle_timeout=2000&application_name={app}"

    def connections() -> int:
        return int(psql(f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}'"))

    with mnemo.Instance.open(f"{database_url}{sep}{options}") as inst:
        inst.create_user("u")
        with inst.login("u") as user:
            dbs = commit_from_four_threads(user, 50)
            assert connections() > 1, "four threads committing at once share more than one"
            assert inst.stats()["storage_connections"] == connections()
            # Closed by the instance while nothing calls it.
            deadline = time.monotonic() + 20
            while connections() > 1:
                assert time.monotonic() < deadline, "idle connections stayed open"
                time.sleep(0.05)
            assert inst.stats()["storage_connections"] == 1
            assert all(db.get("s", "k49") == 49 for db in dbs)


def test_calls_after_the_server_ended_the_connections_succeed(database_url: str) -> None:
    """A restart (here: an administrator ending the instance's sessions) fails no call once
    the server's word of it has arrived: the connection is seen ended and made again. (A
    read cut off while it runs is asked again on another; a write fails, as whether the
    server did it is unknown.)"""
    app = "mnemo_py_ended_" + secrets.token_hex(4)
    sep = "&" if "?" in database_url else "?"
    sessions = f"FROM pg_stat_activity WHERE application_name = '{app}'"

    def end_sessions() -> None:
        assert int(psql(f"SELECT count(pg_terminate_backend(pid)) {sessions}")) >= 1
        assert wait_until(lambda: int(psql(f"SELECT count(*) {sessions}")) == 0)

    with mnemo.Instance.open(f"{database_url}{sep}application_name={app}") as inst:
        inst.create_user("u")
        with inst.login("u") as user, user.create_db("d") as db:
            db.set("s", "k", 1)
            for _ in range(3):
                end_sessions()
                assert db.get("s", "k") == 1
            end_sessions()
            db.set("s", "k", 2)  # the connection is seen ended before it is used
            assert db.get("s", "k") == 2


def tcp_settings_of_connections_to(port: int) -> list[dict[str, int]]:
    """The keepalive and user-timeout settings of this process's TCP sockets to ``port``."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            sock = socket.socket(fileno=os.dup(int(fd)))
        except OSError:
            continue
        with sock:
            if sock.type != socket.SOCK_STREAM or sock.family != socket.AF_INET:
                continue
            try:
                peer_port = sock.getpeername()[1]
            except OSError:
                continue
            if peer_port != port:
                continue
            tcp = socket.IPPROTO_TCP
            found.append(
                {
                    "keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                    "idle": sock.getsockopt(tcp, socket.TCP_KEEPIDLE),
                    "interval": sock.getsockopt(tcp, socket.TCP_KEEPINTVL),
                    "count": sock.getsockopt(tcp, socket.TCP_KEEPCNT),
                    "user_timeout_ms": sock.getsockopt(tcp, socket.TCP_USER_TIMEOUT),
                }
            )
    return found


def test_an_unanswering_server_is_noticed_within_bounds_the_url_may_change(
    database_url: str,
) -> None:
    port = int(database_url.split("@", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    sep = "&" if "?" in database_url else "?"
    with mnemo.Instance.open(database_url):
        assert tcp_settings_of_connections_to(port) == [
            {"keepalive": 1, "idle": 60, "interval": 10, "count": 6, "user_timeout_ms": 120_000}
        ]
    options = "keepalives_idle=20&keepalives_interval=5&keepalives_retries=2&tcp_user_timeout=30"
    with mnemo.Instance.open(f"{database_url}{sep}{options}"):
        assert tcp_settings_of_connections_to(port) == [
            {"keepalive": 1, "idle": 20, "interval": 5, "count": 2, "user_timeout_ms": 30_000}
        ]
    with mnemo.Instance.open(f"{database_url}{sep}keepalives=0"):
        assert [s["keepalive"] for s in tcp_settings_of_connections_to(port)] == [0]


def test_connections_are_called_mnemo_unless_the_url_names_them(database_url: str) -> None:
    database = database_url.rsplit("/", 1)[1]
    with mnemo.Instance.open(database_url):
        names = psql(f"SELECT application_name FROM pg_stat_activity WHERE datname = '{database}'")
        assert names.split() == ["mnemo"]


def test_a_connection_the_server_ended_while_idle_is_replaced_before_the_next_call(
    database_url: str,
) -> None:
    database = database_url.rsplit("/", 1)[1]
    with mnemo.Instance.open(database_url) as inst:
        inst.create_user("u")
        with inst.login("u") as user, user.create_db("d") as db:
            db.set("s", "k", 1)
            ended = psql(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                f"WHERE datname = '{database}'"
            )
            assert ended == "1"
            time.sleep(5.1)  # idle long enough to be checked before its next use
            assert db.get("s", "k") == 1
            db.set("s", "k", 2)
            assert db.get("s", "k") == 2


def test_a_lock_timeout_is_taken(database_url: str) -> None:
    sep = "&" if "?" in database_url else "?"
    with mnemo.Instance.open(f"{database_url}{sep}lock_timeout=1500") as inst:
        inst.create_user("u")
        with inst.login("u") as user:
            db = user.create_db("d")
            db.set("s", "k", 1)
            assert db.get("s", "k") == 1


def test_writes_queued_behind_a_stalled_one_each_give_up_within_the_lock_timeout(
    database_url: str,
) -> None:
    """Threads writing one database behind a write the server keeps waiting (another
    session holds the database's lock) each fail BUSY within about twice their
    lock_timeout (the writes ahead, then the server): before, the k-th waited k times."""
    assert PSQL is not None
    with mnemo.Instance.open(f"{database_url}?lock_timeout=300") as inst:
        inst.create_user("u")
        with inst.login("u") as user, user.create_db("d") as db:
            db.set("s", "k", 1)
            raw_id = db.id.removeprefix("sha256:")
            holder = subprocess.Popen(
                [PSQL, database_url, "-v", "ON_ERROR_STOP=1", "-Atq"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert holder.stdin is not None and holder.stdout is not None
            holder.stdin.write(
                "BEGIN; SELECT 'held' FROM (SELECT pg_advisory_xact_lock("
                f"hashtextextended('{raw_id}', 0))) AS locked;\n"
            )
            holder.stdin.flush()
            try:
                assert holder.stdout.readline() == "held\n"
                started = time.monotonic()
                outcomes: list[tuple[type[BaseException] | None, float]] = []

                def write(n: int) -> None:
                    try:
                        db.set("s", f"w{n}", n)
                        outcomes.append((None, time.monotonic() - started))
                    except mnemo.Error as e:
                        outcomes.append((type(e), time.monotonic() - started))

                writers = [threading.Thread(target=write, args=(n,)) for n in range(8)]
                for writer in writers:
                    writer.start()
                for writer in writers:
                    writer.join()
            finally:
                holder.communicate("ROLLBACK;\n", timeout=30)
            assert [kind for kind, _ in outcomes] == [mnemo.Busy] * 8
            assert max(took for _, took in outcomes) < 1.8, outcomes
            db.set("s", "k", 2)
            assert db.get("s", "k") == 2


def test_a_search_path_of_the_temporary_schema_is_refused(database_url: str) -> None:
    """mnemo's tables made in the connection's temporary schema vanish with it: before,
    the open succeeded and every write and user was gone once the instance closed."""
    url = f"{database_url}?options=-c%20search_path%3Dpg_temp"
    with pytest.raises(mnemo.InvalidArgument, match="temporary schema"):
        mnemo.Instance.open(url)
    with mnemo.Instance.open(database_url) as inst:  # the database itself is usable
        inst.create_user("u")
